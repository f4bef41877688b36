use clap::Parser;
use stator_sidecar::config::{Args, LogFormat};

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Before any thread exists, so every allocation sees it.
    limit_malloc_arenas(args.malloc_arenas);
    let filter = tracing_subscriber::EnvFilter::try_from_env("STATOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stator-sidecar: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stator_sidecar::run::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stator-sidecar failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Caps glibc's malloc arenas (see `--malloc-arenas`), unless `MALLOC_ARENA_MAX` already does.
fn limit_malloc_arenas(arenas: u32) {
    if arenas == 0 || std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let n = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread runs.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, n) } == 0 {
            eprintln!("stator-sidecar: glibc refused M_ARENA_MAX={n}; keeping its default");
        }
    }
}
