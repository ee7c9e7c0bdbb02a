//! The `synod` binary: `node`, `dev`, `kv ...`, `lease ...`, `lock`, `elect`, `status`, `members ...`, `snapshot ...`,
//! `health`. Every flag is also read from a `SYNOD_*` environment variable.

use clap::{Parser, Subcommand};
use driver::cli::{ClientOpts, ElectArgs, KvCmd, LeaseCmd, LockArgs, MembersCmd, SnapshotCmd};
use driver::dev::DevArgs;
use driver::server::NodeArgs;

/// mimalloc instead of glibc's malloc: a profile of the leader under a put load spent about a
/// quarter of its samples in glibc's allocator (`_int_free`, `_int_malloc`, `malloc_consolidate`
/// and its arena locks, contended by the tokio workers); see docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Synod: a replicated key-value service on MultiPaxos.
#[derive(Parser, Debug)]
#[command(name = "synod", version, about)]
struct Args {
    /// Log format: text or json (the filter comes from RUST_LOG, default info).
    #[arg(long, env = "SYNOD_LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start
enum Cmd {
    /// Run one replica.
    Node(NodeArgs),
    /// Run a local cluster (its own etcd and N replica processes) until Ctrl-C.
    Dev(DevArgs),
    /// Key-value commands against any replica.
    Kv {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        cmd: KvCmd,
    },
    /// Client leases: grant, keep alive, revoke, show, list (keys put with `--lease` are
    /// deleted when their lease ends).
    Lease {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        cmd: LeaseCmd,
    },
    /// Run a command while holding a lock: `synod lock NAME [--ttl 10s] -- COMMAND ARGS...`
    /// (a lease kept alive in the background; the command is stopped if it is lost; exit status:
    /// the command's, 2 if the lock was lost). See docs/coordination.md.
    Lock {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(flatten)]
        args: LockArgs,
    },
    /// Campaign in an election and lead until Ctrl-C (`synod elect NAME VALUE`), or print the
    /// leader's value at every change (`synod elect NAME --listen`). See docs/coordination.md.
    Elect {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(flatten)]
        args: ElectArgs,
    },
    /// Show a replica's view of the cluster.
    Status {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List, add or remove members (see docs/membership.md).
    Members {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        cmd: MembersCmd,
    },
    /// Back up a replica's state to a file, or check such a file (see docs/driver.md, "Backup
    /// and restore"; `synod node --restore FILE` starts a new cluster from one).
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// Exit 0 if a replica is ready (its `/readyz` answers 200), else print why and exit 1 (a
    /// container healthcheck).
    Health {
        /// The replica's `/readyz` URL (default: that of a replica at `synod node`'s default
        /// `--http-listen`).
        #[arg(long, env = "SYNOD_HEALTH_URL", default_value = driver::server::DEFAULT_HEALTH_URL)]
        url: String,
        /// How long to wait for the answer, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// The CA certificate (PEM) an `https://` URL is verified against.
        #[arg(long, env = "SYNOD_CACERT")]
        cacert: Option<std::path::PathBuf>,
    },
    /// Make a deployment's certificates: a CA, one certificate per node (for peers and
    /// clients), etcd's server and client certificates, and a token file with an admin token.
    Certs(driver::certs::CertsArgs),
}

fn init_logs(format: &str, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    use std::io::IsTerminal as _;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Cmd::Node(NodeArgs { worker_threads: n @ 1.., .. }) = &args.cmd {
        rt.worker_threads(*n);
    }
    let rt = rt.build()?;
    let code = match args.cmd {
        Cmd::Node(n) => {
            init_logs(&args.log_format, "info");
            rt.block_on(driver::server::run_node(n))?;
            0
        }
        Cmd::Dev(d) => {
            init_logs(&args.log_format, "warn");
            match rt.block_on(driver::dev::run_dev(d)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("synod dev: error: {e:#}");
                    1
                }
            }
        }
        Cmd::Kv { opts, cmd } => {
            init_logs(&args.log_format, "warn");
            rt.block_on(driver::cli::run_kv(opts, cmd))?
        }
        Cmd::Lease { opts, cmd } => {
            init_logs(&args.log_format, "warn");
            rt.block_on(driver::cli::run_lease(opts, cmd))?
        }
        Cmd::Lock { opts, args: lock } => {
            init_logs(&args.log_format, "warn");
            rt.block_on(driver::cli::run_lock(opts, lock))?
        }
        Cmd::Elect { opts, args: elect } => {
            init_logs(&args.log_format, "warn");
            rt.block_on(driver::cli::run_elect(opts, elect))?
        }
        Cmd::Status { opts } => {
            init_logs(&args.log_format, "warn");
            rt.block_on(driver::cli::run_status(opts))?
        }
        Cmd::Members { opts, cmd } => {
            init_logs(&args.log_format, "warn");
            rt.block_on(driver::cli::run_members(opts, cmd))?
        }
        Cmd::Snapshot { cmd } => {
            init_logs(&args.log_format, "warn");
            rt.block_on(driver::cli::run_snapshot(cmd))?
        }
        Cmd::Health { url, timeout_ms, cacert } => {
            init_logs(&args.log_format, "warn");
            rt.block_on(driver::cli::run_health(&url, cacert, std::time::Duration::from_millis(timeout_ms)))
        }
        Cmd::Certs(c) => {
            init_logs(&args.log_format, "warn");
            let w = driver::certs::run(&c)?;
            println!("wrote the CA, node certificates ({}), etcd certificates and tokens.json to {}", c.nodes.iter().map(u64::to_string).collect::<Vec<_>>().join(", "), w.dir.display());
            match w.admin_token {
                Some(t) => println!("admin token: {t}"),
                None => println!("tokens.json already existed: left as it was"),
            }
            0
        }
    };
    drop(rt);
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cmd {
        Args::try_parse_from(args).expect("parse").cmd
    }

    /// `synod health`, `synod node` and the client commands agree on the default REST address
    /// (issue 28: health checked :8080 while a replica listened on :8081). Environment variables
    /// would change the defaults, so the test refuses to run with them set.
    #[test]
    fn health_and_clients_default_to_where_a_node_listens() {
        for var in ["SYNOD_HEALTH_URL", "SYNOD_HTTP_LISTEN", "SYNOD_ENDPOINTS"] {
            assert!(std::env::var_os(var).is_none(), "{var} is set: the defaults cannot be tested");
        }
        let Cmd::Node(node) = parse(&["synod", "node", "--id", "1"]) else { panic!("not node") };
        let Cmd::Health { url, .. } = parse(&["synod", "health"]) else { panic!("not health") };
        assert_eq!(url, format!("http://{}/readyz", node.http_listen));
        let Cmd::Status { opts } = parse(&["synod", "status"]) else { panic!("not status") };
        assert_eq!(opts.endpoints, vec![format!("http://{}", node.http_listen)]);
        let Cmd::Snapshot { cmd: SnapshotCmd::Save { endpoints, .. } } = parse(&["synod", "snapshot", "save", "f"]) else {
            panic!("not snapshot save")
        };
        assert_eq!(endpoints, vec![format!("http://{}", node.http_listen)]);
    }

    /// `synod lock NAME [--ttl] -- COMMAND...` keeps the command's own flags; `synod elect` takes
    /// a value or `--listen`, not both.
    #[test]
    fn lock_and_elect_parse() {
        let Cmd::Lock { args, opts } = parse(&["synod", "lock", "db", "--ttl", "2s", "--endpoints=http://h:1", "--", "sh", "-c", "echo --ttl"]) else {
            panic!("not lock")
        };
        assert_eq!((args.name.as_str(), args.ttl, args.command.clone()), ("db", 2000, vec!["sh".to_string(), "-c".into(), "echo --ttl".into()]));
        assert_eq!(opts.endpoints, vec!["http://h:1".to_string()]);
        let Cmd::Lock { args, .. } = parse(&["synod", "lock", "db", "--", "true"]) else { panic!("not lock") };
        assert_eq!(args.ttl, 10_000, "the default TTL");
        assert!(Args::try_parse_from(["synod", "lock", "db"]).is_err(), "a command is required");
        let Cmd::Elect { args, .. } = parse(&["synod", "elect", "e", "alpha", "--ttl", "3s"]) else { panic!("not elect") };
        assert_eq!((args.value.as_deref(), args.listen, args.ttl), (Some("alpha"), false, 3000));
        let Cmd::Elect { args, .. } = parse(&["synod", "elect", "e", "--listen"]) else { panic!("not elect") };
        assert!(args.listen && args.value.is_none());
        assert!(Args::try_parse_from(["synod", "elect", "e"]).is_err(), "a value or --listen");
        assert!(Args::try_parse_from(["synod", "elect", "e", "v", "--listen"]).is_err(), "not both");
    }
}
