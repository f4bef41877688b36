use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = stator_sidecar::inspect::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stator-inspect: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stator_sidecar::inspect::run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("stator-inspect: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
