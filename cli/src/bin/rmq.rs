//! `rmq`: one binary, one subcommand per role.

use clap::{Parser, Subcommand};
use rmq_cli::roles;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "rmq", version, about = "A RocketMQ 5 compatible message queue")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Name server, store node and proxy in one process (data in ./rmq-data by default).
    Standalone {
        /// Broker properties file (storePathRootDir, flushDiskType, ... are honoured).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// Data folder; the store goes to <dir>/store. Default ./rmq-data unless -c sets storePathRootDir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 9876)]
        namesrv_port: u16,
        #[arg(long, default_value_t = 8081)]
        proxy_port: u16,
        #[arg(long, default_value_t = 5557)]
        metrics_port: u16,
        /// Address to bind every listener to.
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        /// Override a broker property: --set key=value (repeatable).
        #[arg(long = "set")]
        sets: Vec<String>,
    },
    /// A name server.
    Namesrv {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        #[arg(long = "set")]
        sets: Vec<String>,
    },
    /// A store node (Apache's broker), configured by a broker properties file.
    Store {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// Name servers, `host:port;host:port` (overrides namesrvAddr and NAMESRV_ADDR).
        #[arg(short = 'n', long = "namesrvAddr")]
        namesrv: Option<String>,
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        #[arg(long = "set")]
        sets: Vec<String>,
    },
    /// Exits 0 when something accepts TCP connections at ADDR (for container healthchecks).
    Ping { addr: String },
    /// A stateless proxy speaking the RocketMQ 5 gRPC protocol.
    Proxy {
        /// rmq-proxy.json (Apache's -pc).
        #[arg(long = "proxy-config")]
        config: Option<PathBuf>,
        #[arg(short = 'n', long = "namesrvAddr")]
        namesrv: Option<String>,
        /// Accepted for compatibility; only cluster mode exists.
        #[arg(long = "proxy-mode")]
        mode: Option<String>,
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        #[arg(long = "set")]
        sets: Vec<String>,
    },
}

#[tokio::main]
async fn main() {
    rmq_observability::init_tracing();
    let cli = Cli::parse_from(rmq_cli::normalize_args(std::env::args()));
    if let Err(e) = run(cli).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), roles::BoxError> {
    if let Role::Ping { addr } = &cli.role {
        let ok = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr.as_str()),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if ok {
            return Ok(());
        }
        return Err(format!("nothing accepts connections at {addr}").into());
    }
    let shutdown = roles::shutdown_signal();
    match cli.role {
        Role::Ping { .. } => Ok(()),
        Role::Standalone {
            config,
            data_dir,
            namesrv_port,
            proxy_port,
            metrics_port,
            bind,
            sets,
        } => {
            let has_root = roles::read_properties(config.as_deref())?
                .get("storePathRootDir")
                .is_some()
                || sets.iter().any(|s| s.starts_with("storePathRootDir="));
            let mut cfg = roles::store_config(config.as_deref(), None, &sets)?;
            let data_dir = data_dir.or_else(|| (!has_root).then(|| PathBuf::from("rmq-data")));
            if std::env::var("NAMESRV_ADDR").is_err()
                && !sets.iter().any(|s| s.starts_with("namesrvAddr="))
            {
                cfg.namesrv_addr.clear();
            }
            let ports = roles::StandalonePorts {
                namesrv: namesrv_port,
                proxy: proxy_port,
                metrics: metrics_port,
            };
            roles::run_standalone(cfg, ports, &bind, data_dir, shutdown).await
        }
        Role::Namesrv { config, bind, sets } => {
            let cfg = roles::namesrv_config(config.as_deref(), &sets)?;
            Ok(rmq_namesrv::run(cfg, &bind, shutdown).await?)
        }
        Role::Store {
            config,
            namesrv,
            bind,
            sets,
        } => {
            let cfg = roles::store_config(config.as_deref(), namesrv.as_deref(), &sets)?;
            roles::spawn_metrics(&bind, cfg.metrics_prom_exporter_port, shutdown.clone());
            Ok(rmq_store_node::run(cfg, &bind, shutdown, None).await?)
        }
        Role::Proxy {
            config,
            namesrv,
            mode,
            bind,
            sets,
        } => {
            if let Some(m) = mode.filter(|m| !m.eq_ignore_ascii_case("cluster")) {
                return Err(format!(
                    "proxy mode {m} is not supported; run `rmq standalone` for an all-in-one node"
                )
                .into());
            }
            let cfg = roles::proxy_config(config.as_deref(), namesrv.as_deref(), &sets)?;
            roles::spawn_metrics(&bind, cfg.metrics_prom_exporter_port, shutdown.clone());
            Ok(rmq_proxy::run(cfg, &bind, None, shutdown).await?)
        }
    }
}
