//! `wafleet`: the operator CLI.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    // Parsed first, so `--help` works without any setting.
    let cli: wafleet_cli::commands::Cli = wafleet_shared::settings::parse();
    wafleet_shared::telemetry::init_tracing(&cli.settings.telemetry);
    match wafleet_cli::commands::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
