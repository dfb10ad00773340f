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
        /// Allow listening off-loopback without an API token (HTTP) or credentials (RTSP).
        #[arg(long)]
        insecure: bool,
        /// Do not watch the config file for changes (SIGHUP still reloads it).
        #[arg(long)]
        no_watch: bool,
    },
    /// Connect to a source and print its tracks, codecs and timings (like a small ffprobe):
    /// rtsp:// cameras and testsrc://, as the UI's Test does.
    Probe {
        /// rtsp://[user:pass@]host[:port]/path or testsrc://?size=WxH&fps=N
        url: String,
        /// "tcp" or "udp".
        #[arg(long, default_value = "tcp")]
        transport: String,
        /// Bound on connecting and on waiting for frames, e.g. 10s.
        #[arg(long, default_value = "10s")]
        timeout: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a config file and print every problem with its place.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// (Internal) run a command so that nothing it starts outlives livelens.
    #[command(hide = true)]
    Reap {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
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
        no_watch: false,
    }) {
        Command::Serve {
            config,
            listen,
            insecure,
            no_watch,
        } => {
            // The running image, even if the file was replaced since (an upgrade, a rebuild).
            livelens::supervisor::reaper::enable("/proc/self/exe".into());
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
                watch: !no_watch,
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
        Command::Probe {
            url,
            transport,
            timeout,
            json,
        } => probe(&url, &transport, &timeout, json),
        Command::Reap { command } => {
            let code = livelens::supervisor::reaper::run(&command[0], &command[1..]);
            ExitCode::from(u8::try_from(code).unwrap_or(125))
        }
        Command::CheckConfig { file } => check_config(&file),
    }
}

/// Prints every problem of the file as `FILE:LINE: camera "ID": key: message`.
fn check_config(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            println!("{}: cannot read {}: {e}", file.display(), file.display());
            eprintln!("1 problem(s) found");
            return ExitCode::from(1);
        }
    };
    match Config::parse(&text) {
        Ok(config) => {
            println!("{}: ok ({} camera(s))", file.display(), config.camera.len());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                let at = livelens::config::places::locate(&text, &p.place);
                let mut line = file.display().to_string();
                if let Some(n) = at.line {
                    line += &format!(":{n}");
                }
                if !at.label.is_empty() {
                    line += &format!(": {}", at.label);
                }
                println!("{line}: {}", p.message);
            }
            eprintln!("{} problem(s) found", problems.len());
            ExitCode::from(1)
        }
    }
}

/// `livelens probe`: exit 1 when the source cannot be probed, 2 on a bad flag; with `--json`
/// every outcome is one JSON object on stdout (`{"error": …}` on failure).
fn probe(source: &str, transport: &str, timeout: &str, json: bool) -> ExitCode {
    use livelens::common::{mask_credentials, parse_duration};
    use livelens::source::rtsp::RtspOptions;
    let masked = mask_credentials(source);
    let fail = |code: u8, message: String| {
        if json {
            println!(
                "{}",
                serde_json::json!({ "source": masked, "error": message })
            );
        } else {
            eprintln!("livelens probe: {message}");
        }
        ExitCode::from(code)
    };
    let options = match (
        RtspOptions::parse_transport(transport),
        parse_duration(timeout),
    ) {
        (Ok(transport), Ok(timeout)) => RtspOptions {
            transport,
            timeout,
            user_agent: None,
        },
        (Err(e), _) | (_, Err(e)) => return fail(2, e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    let report = match runtime.block_on(livelens::source::probe::probe(source, &options)) {
        Ok(r) => r,
        Err(e) => return fail(1, format!("{masked}: {e}")),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    println!("{masked}");
    for (i, t) in report.tracks.iter().enumerate() {
        let mut line = format!("  track {i}: {} {}", t.media, t.encoding);
        if let Some(c) = &t.codec {
            line += &format!(" {c}");
        }
        if let (Some(w), Some(h)) = (t.width, t.height) {
            line += &format!(" {w}x{h}");
        }
        if t.media == "video" {
            if let Some(fps) = t.fps {
                line += &format!(" {fps:.2} fps");
            }
        }
        if let Some(rate) = t.sample_rate {
            line += &format!(" {rate} Hz");
        }
        if let Some(ch) = t.channels {
            line += &format!(" {ch} ch");
        }
        line += if t.ingested {
            " (ingested)"
        } else {
            " (not ingested)"
        };
        println!("{line}");
    }
    let opt_ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    // Timings of a session set up over the network (an RTSP camera), not of testsrc.
    if let Some(ms) = report.describe_ms {
        println!("  DESCRIBE        {ms:.1} ms");
        println!("  first frame     {}", opt_ms(report.first_frame_ms));
        println!("  first keyframe  {}", opt_ms(report.first_keyframe_ms));
    }
    println!(
        "  GOP             {}",
        report.gop_frames.map_or(
            "- (no second keyframe within the timeout)".into(),
            |g| format!("{g} frames")
        )
    );
    if let Some(fps) = report.measured_fps {
        println!("  measured fps    {fps:.1}");
    }
    if let Some(note) = &report.note {
        println!("  {note}");
    }
    ExitCode::SUCCESS
}
