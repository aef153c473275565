//! The `wspulse` binary: parses the command line and hands over to the library.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wspulse::config::{self, Settings};
use wspulse::metrics::Metrics;
use wspulse::server::Server;

/// A WebSocket reverse proxy that tells you how and why every connection ended.
#[derive(Parser)]
#[command(name = "wspulse", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in the foreground.
    Run {
        /// TOML config file; without it, built-in defaults (+ WSPULSE_* environment overrides).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file: print the effective settings (exit 0) or every problem (exit 2).
    Check {
        /// TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Explain, in plain language, how sessions end: one running instance's /metrics
    /// (--admin), or every instance a selector matches in Prometheus (--prometheus).
    Explain {
        /// Admin base URL of the running wspulse, e.g. http://127.0.0.1:9090
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Prometheus base URL (http://HOST:PORT[/PREFIX]): diagnose the fleet over --window,
        /// name the instances that stand out, and say whether it is fleet-wide.
        #[arg(long, conflicts_with = "admin")]
        prometheus: Option<String>,
        /// PromQL label matchers choosing the instances, e.g. 'job="ws"' (default: every
        /// instance that exposes wspulse's metrics).
        #[arg(long, default_value = "", requires = "prometheus")]
        selector: String,
        /// How far back to look, e.g. 15m, 1h, 1d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, requires = "prometheus")]
        window: std::time::Duration,
        /// `text` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The built-in demo: an echo upstream, the proxy in front of it, synthetic clients ending
    /// sessions every way the proxy tells apart, and a live table of what it records.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
    },
}

/// How `explain` writes its report.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// Plain language.
    Text,
    /// One JSON object.
    Json,
}

fn load(
    file: Option<&std::path::Path>,
    env: &HashMap<String, String>,
) -> Result<Settings, ExitCode> {
    config::load(file, env).map_err(|errors| {
        eprintln!("wspulse: invalid configuration:");
        for e in &errors.0 {
            eprintln!("  {e}");
        }
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = config::process_env();
    match cli.command {
        Command::Check { config } => match load(Some(&config), &env) {
            Ok(settings) => {
                println!("# {}: valid. Effective settings:", config.display());
                print!("{}", settings.to_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config } => match load(config.as_deref(), &env) {
            Ok(settings) => run(settings),
            Err(code) => code,
        },
        Command::Demo { duration } => {
            wspulse::demo::run(duration.map(std::time::Duration::from_secs))
        }
        Command::Explain {
            admin,
            prometheus,
            selector,
            window,
            output,
        } => match prometheus {
            Some(url) => explain_fleet(&url, &selector, window, output),
            None => explain(&admin, output),
        },
    }
}

/// Run `work` on a one-thread runtime; exit 1 with the reason when it fails.
fn explain_with<T, E: std::fmt::Display>(
    work: impl std::future::Future<Output = Result<T, E>>,
    print: impl FnOnce(T) -> Result<(), serde_json::Error>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wspulse explain: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(work).map(print) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("wspulse explain: cannot write the report: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("wspulse explain: {e}");
            ExitCode::from(1)
        }
    }
}

/// Print `report` as text or as one JSON object.
fn print_report<R: std::fmt::Display + serde::Serialize>(
    report: &R,
    output: Output,
) -> Result<(), serde_json::Error> {
    match output {
        Output::Text => print!("{report}"),
        Output::Json => println!("{}", serde_json::to_string_pretty(report)?),
    }
    Ok(())
}

/// `wspulse explain --admin`: exit 1 with the reason when the admin
/// address gives no `/metrics` (nothing listening, not HTTP, a status
/// other than 200).
fn explain(admin: &str, output: Output) -> ExitCode {
    explain_with(wspulse::explain::fetch(admin), |text| {
        let diagnosis = wspulse::explain::analyse(&wspulse::explain::prom::parse(&text));
        print_report(&diagnosis, output)
    })
}

/// `wspulse explain --prometheus`: exit 1 with the reason when Prometheus
/// is unreachable, refuses a query, or the selector matches no wspulse.
fn explain_fleet(
    url: &str,
    selector: &str,
    window: std::time::Duration,
    output: Output,
) -> ExitCode {
    explain_with(
        wspulse::explain::fleet::explain(url, selector, window),
        |report| print_report(&report, output),
    )
}

fn run(settings: Settings) -> ExitCode {
    wspulse::telemetry::init(&settings.log);
    let runtime = wspulse::server::runtime();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wspulse: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let route_names: Vec<String> = settings.routes.iter().map(|r| r.name.clone()).collect();
        let registry = prometheus::Registry::new();
        let metrics =
            match Metrics::register(&registry, &route_names, settings.admin.recent_closures) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("wspulse: cannot register metrics: {e}");
                    return ExitCode::from(1);
                }
            };
        let server = match Server::bind(settings, metrics).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("wspulse: {e}");
                return ExitCode::from(1);
            }
        };
        tracing::info!(listen = %server.local_addr(), admin = %server.admin_addr(), "listening");
        server.run(wspulse::shutdown::signal()).await;
        ExitCode::SUCCESS
    })
}
