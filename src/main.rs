//! The livelens command line: `serve` (the default), `check-config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use livelens::config::Config;
use livelens::serve::{self, ServeOptions};

#[derive(Parser)]
#[command(
    name = "livelens",
    version,
    about = "Live cameras in, browsers out, models watching."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the cameras of a config file (or, with none, the demo camera).
    Serve {
        /// The TOML config file; cameras added through the API are saved back to it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:8080, or [server] listen).
        #[arg(long, short)]
        listen: Option<SocketAddr>,
        /// Allow listening off-loopback without an API token.
        #[arg(long)]
        insecure: bool,
    },
    /// Check a config file and print every problem with its place.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVELENS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command.unwrap_or(Command::Serve {
        config: None,
        listen: None,
        insecure: false,
    }) {
        Command::Serve {
            config,
            listen,
            insecure,
        } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("livelens: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(serve::run(ServeOptions {
                config_path: config,
                listen,
                insecure,
            }));
            // Blocking-pool threads (snapshot decodes) get a bounded time to finish.
            runtime.shutdown_timeout(std::time::Duration::from_millis(200));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("livelens: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                println!("{}: ok ({} camera(s))", file.display(), config.camera.len());
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in &problems {
                    println!("{}: {p}", file.display());
                }
                eprintln!("{} problem(s) found", problems.len());
                ExitCode::from(1)
            }
        },
    }
}
