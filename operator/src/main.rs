use clap::Parser;
use stator_operator::run::{Args, Command, crd_yaml, run};

fn main() -> std::process::ExitCode {
    // The workspace links rustls with both ring and aws-lc-rs (the AWS SDK brings the latter), so
    // rustls cannot pick a provider by itself: name one for the Kubernetes client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    match args.command {
        Command::Crd => match crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("stator-operator: cannot render the CRD: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("STATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr);
            if args.log_format == "text" {
                subscriber.init()
            } else {
                subscriber.json().init()
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("stator-operator: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "stator-operator failed");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
