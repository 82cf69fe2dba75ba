//! The command line: `run`, `check-config`, `demo`, `report`. Parses flags into a `Config` and starts
//! the runtime; all behaviour lives in `app` and below.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Admin, Config, Endpoint, Intercept, Relay};

#[derive(Parser, Debug)]
#[command(
    name = "runtime-tap",
    version,
    about = "Transparent interception proxy for container-runtime sockets: every CRI, containerd and Docker call as an OpenTelemetry span"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy, from a config file or one intercept given on the command line.
    Run(RunArgs),
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Bring up private containerd and dockerd (installing them when missing), put
    /// runtime-tap in front of both, and keep it running until Ctrl-C.
    Demo(crate::bed::demo::DemoArgs),
    /// Summarize a span file (OTLP/JSON lines): latency per service and span name
    /// (p50/p90/p99/max, error rate) and the slowest operations with their per-layer self time;
    /// --html also writes a self-contained page with histograms and timelines.
    Report(crate::report::ReportArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The TOML config file.
    #[arg(long, short, conflicts_with_all = ["name", "listen", "upstream"])]
    config: Option<PathBuf>,
    /// One-intercept shorthand: the intercept's name (service.name of its spans).
    #[arg(long, requires_all = ["listen", "upstream"])]
    name: Option<String>,
    /// One-intercept shorthand: where clients connect (unix:///path or tcp://host:port).
    #[arg(long)]
    listen: Option<String>,
    /// One-intercept shorthand: the daemon's socket (unix:///path or tcp://host:port).
    #[arg(long)]
    upstream: Option<String>,
    /// One-intercept shorthand: admin endpoint address, or "off".
    #[arg(long, default_value = crate::config::DEFAULT_ADMIN_LISTEN)]
    admin: String,
    /// Raw capture for offline analysis: write every intercept's connections to pcapng files
    /// in DIR (`<intercept>-<n>.pcapng`, created 0600, rotated per intercept as configured,
    /// default 4 files of 64 MiB), readable by Wireshark and tshark. The bytes are NOT
    /// redacted: use it for debugging on trusted machines. Overrides `capture_dir` in the file.
    #[arg(long, value_name = "DIR")]
    capture: Option<PathBuf>,
    /// Flight recorder: keep SIZE (`16MiB`) of every intercept's most recent bytes in memory
    /// and write a connection's share as a pcapng when one of its calls fails or is slow
    /// (into the capture directory, else `flight_recorder_dir`). NOT redacted, like
    /// --capture. Overrides `flight_recorder` in the file.
    #[arg(long, value_name = "SIZE")]
    flight_recorder: Option<String>,
}

/// Parse arguments and run; the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                print!("{}", c.to_toml());
                println!("{}", crate::schema::redact::BUILTIN_NOTE);
                eprintln!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run(args) => {
            let config = match run_config(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            exit(runtime().and_then(|rt| rt.block_on(crate::app::run(config, crate::app::Hooks::default()))))
        }
        Command::Demo(args) => exit(runtime().and_then(|rt| rt.block_on(crate::bed::demo::run(args)))),
        Command::Report(args) => exit(crate::report::run(args)),
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_config(args: RunArgs) -> Result<Config, String> {
    let mut config = base_config(args.config, args.name, args.listen, args.upstream, args.admin)?;
    if let Some(dir) = args.capture {
        for ic in &mut config.intercepts {
            ic.capture_dir = Some(dir.clone());
        }
    }
    if let Some(size) = args.flight_recorder {
        for ic in &mut config.intercepts {
            ic.flight_recorder = Some(size.clone());
        }
        // The flag's value is checked like the file's, naming the flag.
        config.validate("--flight-recorder").map_err(|e| e.to_string())?;
    }
    Ok(config)
}

fn base_config(
    file: Option<PathBuf>,
    name: Option<String>,
    listen: Option<String>,
    upstream: Option<String>,
    admin: String,
) -> Result<Config, String> {
    if let Some(file) = file {
        return Config::load(&file).map_err(|e| e.to_string());
    }
    let (Some(name), Some(listen), Some(upstream)) = (name, listen, upstream) else {
        return Err("give --config FILE, or --name, --listen and --upstream".into());
    };
    let parse = |flag: &str, v: &str| v.parse::<Endpoint>().map_err(|e| format!("--{flag}: {e}"));
    let config = Config {
        intercepts: vec![Intercept::new(
            name,
            parse("listen", &listen)?,
            parse("upstream", &upstream)?,
        )],
        admin: Admin { listen: admin },
        relay: Relay::default(),
        export: Default::default(),
        descriptor_sets: Vec::new(),
        sampling: Default::default(),
        correlation: Default::default(),
        redact: Default::default(),
    };
    config.validate("command line").map_err(|e| e.to_string())?;
    Ok(config)
}

/// The runtime: multi-threaded, one worker per core (2 here), so the relay of one
/// connection and the decoding of another run in parallel.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
