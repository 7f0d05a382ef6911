use std::process::ExitCode;

use clap::Parser;
use upsert_minion::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (format, level) = cli::log_settings(&cli);
    upsert_minion::logging::init(format, &level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The one place errors are reported: with their whole chain of causes, control
            // characters from inputs escaped (a value from a file cannot forge a line).
            eprintln!(
                "error: {}",
                upsert_minion::logging::escape_controls(&format!("{err:#}"))
            );
            ExitCode::FAILURE
        }
    }
}
