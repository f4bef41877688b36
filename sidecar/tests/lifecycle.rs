//! Start-up, shutdown, restart, socket handling and the admin endpoint, on a real process.

mod common;

use std::os::unix::fs::PermissionsExt;

use stator_client::{Batch, Client, proto};

#[tokio::test]
async fn state_survives_a_clean_restart_on_the_same_data_directory() {
    let mut sidecar = common::Sidecar::start(&[
        "--state",
        "v:value",
        "--state",
        "l:list",
        "--operator-state",
        "offsets:split",
    ]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    client
        .declare(
            vec![stator_client::state("m", proto::StateKind::Map, 0)],
            vec![],
        )
        .await
        .unwrap();
    let mut batch = Batch::new();
    for i in 0..1000 {
        batch.value_put("v", format!("k{i}"), format!("v{i}"));
    }
    batch.list_append("l", "k", ["a", "b"]);
    batch.map_put("m", "k", "mk", "mv");
    batch.operator_state_set("offsets", ["42"]);
    client.write(batch).await.unwrap();
    drop(client);

    let status = sidecar.terminate();
    assert!(
        status.success(),
        "SIGTERM gives a clean exit 0, got {status}"
    );
    assert!(
        !sidecar.socket.exists(),
        "the socket file is removed on shutdown"
    );
    sidecar.spawn();
    sidecar.wait_ready();

    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let names: Vec<_> = client
        .hello()
        .states
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(names, ["l", "m", "v"], "runtime declarations are persisted");
    for i in (0..1000).step_by(97) {
        assert_eq!(
            client.get("v", format!("k{i}")).await.unwrap().as_deref(),
            Some(format!("v{i}").as_bytes())
        );
    }
    assert_eq!(client.list_get("l", "k").await.unwrap(), ["a", "b"]);
    assert_eq!(
        client.map_get("m", "k", "mk").await.unwrap().as_deref(),
        Some(&b"mv"[..])
    );
    assert_eq!(client.operator_state_get("offsets").await.unwrap(), ["42"]);
}

#[tokio::test]
async fn socket_is_private_stale_files_are_replaced_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("run/state.sock");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    // A socket file nobody listens on, as left by a killed process.
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let sidecar = common::Sidecar::start_in(dir.path(), &[]);
    let mode = std::fs::metadata(&sidecar.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    Client::connect(&sidecar.socket)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();

    // A second sidecar on the same socket must not steal it from the live one.
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_stator-sidecar"))
        .args(["--socket", &sidecar.socket.display().to_string()])
        .args([
            "--data-dir",
            &dir.path().join("other").display().to_string(),
        ])
        .args([
            "--admin-addr",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by a live process"));
    Client::connect(&sidecar.socket)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn admin_api_needs_the_token_but_probes_and_metrics_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let sidecar = common::Sidecar::start(&[
        "--admin-token-file",
        token_file.to_str().unwrap(),
        "--state",
        "v:value",
    ]);
    assert_eq!(
        common::http_get(sidecar.admin, "/healthz", None).unwrap().0,
        200
    );
    assert_eq!(
        common::http_get(sidecar.admin, "/readyz", None).unwrap().0,
        200
    );
    assert_eq!(
        common::http_get(sidecar.admin, "/v1/status", None)
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        common::http_get(sidecar.admin, "/v1/status", Some("wrong"))
            .unwrap()
            .0,
        401
    );
    let (code, body) = common::http_get(sidecar.admin, "/v1/status", Some("s3cret-token")).unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"maxParallelism\":128"), "{body}");

    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let mut batch = Batch::new();
    batch.value_put("v", "k", "x");
    client.write(batch).await.unwrap();
    client.get("v", "k").await.unwrap();
    let _ = client.get("nope", "k").await;
    let (code, metrics) = common::http_get(sidecar.admin, "/metrics", None).unwrap();
    assert_eq!(code, 200);
    for needle in [
        "stator_sidecar_operations_total{op=\"write\"} 1",
        "stator_sidecar_operations_total{op=\"get\"} 2",
        "stator_sidecar_errors_total{code=\"UNKNOWN_STATE\"} 1",
        "stator_sidecar_request_duration_seconds_bucket",
        "stator_sidecar_rocksdb{property=\"memtable_bytes\"}",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("s3cret"),
        "the token never appears in metrics"
    );
}

#[tokio::test]
async fn admin_api_without_a_token_file_refuses_everything() {
    let sidecar = common::Sidecar::start(&[]);
    assert_eq!(
        common::http_get(sidecar.admin, "/v1/status", Some("anything"))
            .unwrap()
            .0,
        403
    );
}

#[tokio::test]
async fn bad_configuration_fails_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stator-sidecar"))
            .args(["--socket", &dir.path().join("s.sock").display().to_string()])
            .args(["--data-dir", &dir.path().join("d").display().to_string()])
            .args([
                "--admin-addr",
                &format!("127.0.0.1:{}", common::free_port()),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--parallelism", "4", "--replica-index", "4"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("replica index 4 is out of range for parallelism 4")
    );
    let out = run(&["--parallelism", "200"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("parallelism must be between 1 and maxParallelism (128)")
    );
    let out = run(&["--state", "x:set"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kind"));
}
