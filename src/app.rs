//! Assembles a running proxy from a resolved config: opens the store, binds the listener, and
//! runs until told to stop. The only place that wires components together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::accesslog::AccessLog;
use crate::cache::inflight::Inflight;
use crate::cache::policy::Heuristic;
use crate::cache::store::Store;
use crate::config::Config;
use crate::error::Error;
use crate::fetch::{connect, origin::Origin, Fetcher};
use crate::metrics::Metrics;
use crate::peer::{self, PeerTuning, Peers};

/// How long in-flight responses may take to finish after a shutdown request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything a request handler can reach.
pub struct App {
    pub config: Config,
    /// The address actually bound (the config may say port 0).
    pub listen: SocketAddr,
    pub store: Store,
    pub inflight: Arc<Inflight>,
    pub fetcher: Fetcher,
    pub metrics: Arc<Metrics>,
    pub heuristic: Heuristic,
    pub access: AccessLog,
    pub started: tokio::time::Instant,
    /// The peer side, when `peers.enabled`.
    pub peers: Option<Arc<Peers>>,
    peer_side: std::sync::Mutex<Option<peer::Started>>,
}

/// A bound proxy, ready to run.
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
}

impl Server {
    /// Opens the cache and binds the proxy port. Fails with a clear message if either is
    /// impossible (directory not writable, cache locked by another process, port in use).
    pub async fn bind(config: Config) -> Result<Server, Error> {
        Self::bind_tuned(config, PeerTuning::default()).await
    }

    /// `bind` with explicit peer-group timings (tests speed gossip up).
    pub async fn bind_tuned(mut config: Config, tuning: PeerTuning) -> Result<Server, Error> {
        let dir = config.cache.dir.clone();
        let max_size = config.cache.max_size;
        let want_sendfile = config.cache.sendfile;
        let (store, sendfile) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&dir, max_size)?;
            let works = want_sendfile && crate::sendfile::works_with(&store);
            Ok::<_, Error>((store, works))
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        if want_sendfile && !sendfile {
            tracing::warn!(
                dir = %config.cache.dir.display(),
                "sendfile(2) does not work from this file system; large hits are copied instead"
            );
            config.cache.sendfile = false;
        }
        let listener = TcpListener::bind(config.proxy.listen).await.map_err(|e| {
            Error::internal(format!("cannot listen on {}: {e}", config.proxy.listen))
        })?;
        let listen = listener
            .local_addr()
            .map_err(|e| Error::internal(e.to_string()))?;
        let extra_roots = match &config.upstream.ca_file {
            Some(path) => connect::load_ca_file(path)
                .map_err(|e| Error::internal(format!("upstream.ca_file: {e}")))?,
            None => Vec::new(),
        };
        let tls =
            connect::tls_config(&extra_roots).map_err(|e| Error::internal(format!("TLS: {e}")))?;
        let metrics = Arc::new(Metrics::default());
        let inflight = Inflight::new();
        let peer_side = if config.peers.enabled {
            Some(Peers::start(&config, store.clone(), inflight.clone(), tuning).await?)
        } else {
            None
        };
        let peers = peer_side.as_ref().map(|s| s.peers.clone());
        let via: Arc<str> = format!("peercache-{:08x}", rand::random::<u32>()).into();
        let fetcher = Fetcher {
            origin: Origin::new(&config.upstream, tls),
            store: store.clone(),
            metrics: metrics.clone(),
            max_object_size: config.cache.max_object_size,
            via,
            peers: peers.clone(),
        };
        let access = if config.log.access {
            AccessLog::stdout()
        } else {
            AccessLog::disabled()
        };
        let app = Arc::new(App {
            config,
            listen,
            store,
            inflight,
            fetcher,
            metrics,
            heuristic: Heuristic::default(),
            access,
            started: tokio::time::Instant::now(),
            peers,
            peer_side: std::sync::Mutex::new(peer_side),
        });
        Ok(Server { app, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.app.listen
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves until `stop` turns true, then lets open responses finish (bounded by
    /// `SHUTDOWN_GRACE`).
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let app = self.app.clone();
        let _history = Task(tokio::spawn(sample_history(app.metrics.clone())));
        crate::front::serve(self.listener, self.app, stop).await;
        let side = app.peer_side.lock().ok().and_then(|mut s| s.take());
        if let Some(side) = side {
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
        tokio::time::sleep(metrics.history_step()).await;
    }
}

/// A proxy running in a background task.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
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
