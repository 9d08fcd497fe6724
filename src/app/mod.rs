//! Assembles a running proxy from a resolved config: checks what it needs, binds the listeners,
//! opens the store, and runs until told to stop. The only place that wires components together.

pub mod preflight;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::accesslog::AccessLog;
use crate::cache::inflight::Inflight;
use crate::cache::rules::Rules;
use crate::cache::store::Store;
use crate::config::Config;
use crate::error::Error;
use crate::fetch::{connect, hosts::HostAddrs, origin::Origin, Fetcher};
use crate::front::intercept::{ca, Interceptor};
use crate::front::relink::Relinker;
use crate::front::Proxy;
use crate::metrics::Metrics;
use crate::peer::auth::ClusterKey;
use crate::peer::{self, PeerSockets, PeerTuning, Peers};
use crate::port_owner::{self, Proto};

/// A bound proxy, ready to run.
pub struct Server {
    app: Arc<Proxy>,
    listener: TcpListener,
    /// The peer side, stopped after the listener.
    peer_side: Option<peer::Started>,
}

/// Why a node could not start. A problem with the machine or the config names the setting and
/// the fix; `Internal` is left for what the user cannot act on.
#[derive(Debug)]
pub enum StartError {
    /// `key` (e.g. `proxy.listen`) asks for something this machine cannot give.
    Setting {
        key: &'static str,
        message: String,
    },
    Internal(Error),
}

impl StartError {
    fn setting(key: &'static str, message: impl Into<String>) -> Self {
        StartError::Setting {
            key,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Setting { key, message } => write!(f, "{key}: {message}"),
            StartError::Internal(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<Error> for StartError {
    fn from(e: Error) -> Self {
        StartError::Internal(e)
    }
}

/// The error for a listener that could not be bound: which address, why, and for a busy port
/// which process holds it (when the OS tells).
fn bind_error(key: &'static str, proto: Proto, addr: SocketAddr, e: &std::io::Error) -> StartError {
    let p = proto.as_str();
    let message = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            let by = match port_owner::holder(proto, addr) {
                Some(h) => format!(" by {h}"),
                None => String::new(),
            };
            format!(
                "{addr} ({p}) is already in use{by}: stop that program, or set {key} to a free \
                 address"
            )
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "this user may not bind {addr} ({p}): {e} (ports below 1024 need \
             CAP_NET_BIND_SERVICE; pick a port above 1023)"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{addr} ({p}) is not an address of this machine: {e} (set {key} to one of its \
             addresses, or 0.0.0.0)"
        ),
        _ => format!("cannot bind {addr} ({p}): {e}"),
    };
    StartError::setting(key, message)
}

impl Server {
    /// Binds every listener, then opens the cache: nothing is created on disk unless the node
    /// can serve. Fails with the setting to change (key file, busy port, cache directory).
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        Self::bind_tuned(config, PeerTuning::default()).await
    }

    /// `bind` with explicit peer-group timings (tests speed gossip up).
    pub async fn bind_tuned(mut config: Config, tuning: PeerTuning) -> Result<Server, StartError> {
        // Reads first (key, CA file), then binds, then writes (cache directory, node id).
        let key = if config.peers.enabled {
            let key = ClusterKey::load(&config.peers.key_file)
                .map_err(|m| StartError::setting("peers.key_file", m))?;
            Some(key)
        } else {
            None
        };
        let extra_roots = match &config.upstream.ca_file {
            Some(path) => connect::load_ca_file(path)
                .map_err(|m| StartError::setting("upstream.ca_file", m))?,
            None => Vec::new(),
        };
        let tls =
            connect::tls_config(&extra_roots).map_err(|e| Error::internal(format!("TLS: {e}")))?;
        let rules = Rules::from_config(&config.rules)
            .map_err(|e| StartError::setting("rule", format!("cannot compile the patterns: {e}")))?
            .with_targets(config.cache.targeted.clone());
        let rules = Arc::new(rules);
        let listener = TcpListener::bind(config.proxy.listen)
            .await
            .map_err(|e| bind_error("proxy.listen", Proto::Tcp, config.proxy.listen, &e))?;
        let listen = listener
            .local_addr()
            .map_err(|e| Error::internal(e.to_string()))?;
        let peer_sockets = match &key {
            Some(_) => Some(
                PeerSockets::bind(config.peers.listen)
                    .await
                    .map_err(|(proto, addr, e)| bind_error("peers.listen", proto, addr, &e))?,
            ),
            None => None,
        };
        let dir = config.cache.dir.clone();
        let max_size = config.cache.max_size;
        let want_sendfile = config.cache.sendfile;
        let (store, sendfile) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&dir, max_size)?;
            let works = want_sendfile && store.temp_file().is_ok_and(crate::sendfile::works_with);
            Ok::<_, Error>((store, works))
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(|e| {
            StartError::setting(
                "cache.dir",
                format!(
                    "{} (is the directory writable by this user, and not used by another \
                     peercache?)",
                    e.detail
                ),
            )
        })?;
        if want_sendfile && !sendfile {
            tracing::warn!(
                dir = %config.cache.dir.display(),
                "sendfile(2) does not work from this file system; large hits are copied instead"
            );
            config.cache.sendfile = false;
        }
        let metrics = Arc::new(Metrics::default());
        let intercept = Self::interceptor(&config, &metrics).await?;
        let inflight = Inflight::new(config.cache.max_fills);
        let resolver = tuning.resolver.clone();
        let peer_side = match (key, peer_sockets) {
            (Some(key), Some(sockets)) => Some(
                Peers::start(
                    &config,
                    key,
                    sockets,
                    store.clone(),
                    inflight.clone(),
                    rules.clone(),
                    tuning,
                )
                .await?,
            ),
            _ => None,
        };
        let peers = peer_side.as_ref().map(|s| s.peers.clone());
        let via =
            crate::http::headers::Via::new(&format!("peercache-{:08x}", rand::random::<u32>()));
        let fetcher = Fetcher {
            origin: Origin::new(&config.upstream, tls),
            store: store.clone(),
            inflight: inflight.clone(),
            metrics: metrics.clone(),
            max_object_size: config.cache.max_object_size,
            range_fill: config.cache.range_fill,
            via,
            peers: peers.clone(),
            rules: rules.clone(),
            hosts: Arc::new(HostAddrs::new(resolver, metrics.clone())),
        };
        let access = if config.log.access {
            AccessLog::stdout(metrics.clone())
        } else {
            AccessLog::disabled()
        };
        let relinker = Relinker::new(&config.mirrors, metrics.clone());
        let app = Arc::new(Proxy {
            relinker,
            config,
            listen,
            store,
            inflight,
            fetcher,
            metrics,
            rules,
            access,
            started: tokio::time::Instant::now(),
            peers,
            intercept,
        });
        Ok(Server {
            app,
            listener,
            peer_side,
        })
    }

    /// Loads the interception CA (making it on the first run) when hosts are listed.
    async fn interceptor(
        config: &Config,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Interceptor>, StartError> {
        let c = &config.intercept;
        if c.hosts.is_empty() {
            return Ok(None);
        }
        let (cert, key) = (c.ca_cert.clone(), c.ca_key.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            ca::load_or_create(&cert, &key, std::time::SystemTime::now())
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?;
        let (ca, origin) = loaded.map_err(|m| StartError::setting("intercept.ca_cert", m))?;
        if origin == ca::Origin::Created {
            tracing::warn!(
                "made a new interception CA {} (SHA-256 {}): clients must trust it, see `peercache ca`",
                c.ca_cert.display(),
                ca.fingerprint()
            );
        }
        let hosts = c.hosts.clone();
        Interceptor::new(hosts, ca, metrics.clone())
            .map(Some)
            .map_err(|e| StartError::Internal(Error::internal(format!("intercept: {e}"))))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.app.listen
    }

    pub fn app(&self) -> &Arc<Proxy> {
        &self.app
    }

    /// Serves until `stop` turns true, then lets open responses finish (bounded by
    /// `SHUTDOWN_GRACE`).
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let app = self.app.clone();
        let _history = Task(tokio::spawn(sample_history(app.metrics.clone())));
        crate::front::serve(self.listener, self.app, stop).await;
        if let Some(side) = self.peer_side {
            side.stop().await;
        }
    }

    /// Runs in a background task; for tests and embedding.
    pub fn spawn(self) -> Running {
        let (tx, rx) = watch::channel(false);
        let addr = self.local_addr();
        let app = self.app.clone();
        let task = tokio::spawn(self.run(rx));
        Running {
            addr,
            app,
            stop: tx,
            task,
        }
    }
}

/// A background task that ends when this guard is dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ends a step of the counters' history every [`Metrics::history_step`] (5 s), for the
/// dashboard's chart.
async fn sample_history(metrics: Arc<Metrics>) {
    loop {
        metrics.sample();
        tokio::select! {
            () = tokio::time::sleep(metrics.history_step()) => {}
            () = metrics.history_step_changed() => {}
        }
    }
}

/// A proxy running in a background task.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<Proxy>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, waits for open responses (bounded), and returns when the server is gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
