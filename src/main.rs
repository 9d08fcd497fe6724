//! The `peercache` command: run the proxy, check a config, or query a running proxy's status.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use peercache::app::preflight::{self, Finding};
use peercache::app::Server;
use peercache::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "A caching HTTP forward proxy whose nodes share their caches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (with the embedded default config unless --config is given).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and what it names (cluster key file, CA file, cache directory)
    /// without binding or writing anything; exit 0 if `run` can start, 1 with every error (line
    /// and key, or file) if not.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Make the HTTPS interception CA if it does not exist yet ([intercept] ca_cert and ca_key;
    /// the key gets mode 0600), then print the certificate's path and SHA-256 fingerprint.
    Ca {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Write a new random cluster key (32 bytes, hex) to FILE for the peer group; refuses to
    /// overwrite an existing file. Copy the same file to every member.
    Keygen { file: PathBuf },
    /// Summarise a running proxy's status (uptime, hit ratio, bytes saved, cache use, members).
    Status {
        /// The proxy's address.
        #[arg(long, default_value = "http://127.0.0.1:3128")]
        proxy: String,
        /// Print the whole status document as (indented) JSON instead.
        #[arg(long)]
        json: bool,
    },
}

/// How messages name the config: its path, or the built-in defaults.
fn origin(path: Option<&PathBuf>) -> String {
    path.map_or_else(
        || "built-in defaults".to_owned(),
        |p| p.display().to_string(),
    )
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default_config()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(config.as_ref()) {
            Ok(c) => {
                let report = preflight::check(&c);
                let origin = origin(config.as_ref());
                for w in &report.warnings {
                    eprintln!("warning: {origin}: {w}");
                }
                for e in &report.errors {
                    eprintln!("{origin}: {e}");
                }
                if report.errors.is_empty() {
                    println!("config ok");
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match load(config.as_ref()) {
            Ok(c) => {
                let report = preflight::check(&c);
                let origin = origin(config.as_ref());
                for e in &report.errors {
                    eprintln!("peercache: {origin}: {e}");
                }
                if report.errors.is_empty() {
                    run(c, &origin, &report.warnings)
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Status { proxy, json } => status(&proxy, json),
        Command::Ca { config } => match load(config.as_ref()) {
            Ok(c) => ca(&c),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Keygen { file } => match peercache::peer::auth::ClusterKey::write_new(&file) {
            Ok(key) => {
                println!(
                    "wrote a new cluster key to {} (fingerprint {})",
                    file.display(),
                    key.fingerprint()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("peercache keygen: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        // File reads and writes, and waits for row commits, run on the blocking pool; a bounded
        // pool keeps threads (and their stacks and malloc arenas) from piling up under load.
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
}

/// Threads for blocking file I/O.
const BLOCKING_THREADS: usize = 32;

fn run(config: Config, origin: &str, warnings: &[Finding]) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for w in warnings {
        tracing::warn!("{origin}: {w}");
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("peercache: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("peercache listening on {}", server.local_addr());
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        server.run(rx).await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn ca(config: &Config) -> ExitCode {
    use peercache::front::intercept::ca;
    let (cert, key) = (&config.intercept.ca_cert, &config.intercept.ca_key);
    match ca::load_or_create(cert, key, std::time::SystemTime::now()) {
        Ok((ca, origin)) => {
            let what = match origin {
                ca::Origin::Created => "made a new CA",
                ca::Origin::Existing => "CA exists",
            };
            println!("{what}: {}", cert.display());
            println!(
                "key: {} (keep it private; it never leaves this machine)",
                key.display()
            );
            println!("SHA-256 fingerprint: {}", ca.fingerprint());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("peercache ca: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(proxy: &str, json: bool) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let fetched = rt.block_on(peercache::front::admin::fetch_status(proxy));
    let doc = fetched.and_then(|text| {
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| format!("{proxy} sent a status that is not JSON: {e}"))
    });
    match doc {
        Ok(doc) if json => {
            println!("{doc:#}");
            ExitCode::SUCCESS
        }
        Ok(doc) => {
            print!("{}", peercache::front::admin::status_text::render(&doc));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("peercache status: {e}");
            ExitCode::FAILURE
        }
    }
}
