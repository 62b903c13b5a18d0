//! `serve`: the whole wiring of the server on one screen.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portunus_control::{ControlService, ServerInfo};
use portunus_core::config::{ServerSettings, SettingsLayer};
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ports::StoreError;
use portunus_core::service::ServerIdentity;
use portunus_http::AppState;
use portunus_http::routes::admin::StoreBackup;
use portunus_runtime::{Ports, Runtime, SystemClock};
use portunus_store_redb::RedbStore;
use portunus_telemetry::metrics::ServerMetrics;
use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::datadir::{self, BoundAddrs};
use crate::os;

/// Serves until SIGTERM/SIGINT. A start that fails before it serves removes the data dir if
/// this run created it (the guard is declared first, so it drops after the store is closed).
pub async fn run(dir: &Path, args: ServeArgs) -> Result<(), Failure> {
    let mut shutdown = os::ShutdownSignal::install();
    let mut created = datadir::prepare_tracked(dir)?;
    let flags = SettingsLayer {
        control_listen: args.control_listen,
        operator_http_listen: args.operator_http_listen,
        metrics_listen: args.metrics_listen,
        advertised_endpoint: args.advertised_endpoint,
        cert_sans: (!args.cert_sans.is_empty()).then_some(args.cert_sans),
        enrollment_ttl_secs: args.enrollment_ttl_secs,
        stats_interval_secs: args.stats_interval_secs,
        audit_retention_days: args.audit_retention_days,
        public_origins: (!args.public_origins.is_empty()).then_some(args.public_origins),
        trusted_proxies: (!args.trusted_proxies.is_empty()).then_some(args.trusted_proxies),
        ..Default::default()
    };
    let file = datadir::settings_file(dir).inspect_err(
        |f| tracing::error!(event = "startup.invalid_config", code = %f.code, message = %f.message),
    )?;
    datadir::tighten_secrets(dir, &file)?;
    let settings = ServerSettings::resolve(flags.over(file)).inspect_err(
        |f| tracing::error!(event = "startup.invalid_config", code = %f.code, message = %f.message),
    )?;
    let store = Arc::new(open_store(&dir.join(datadir::STORE_FILE)).inspect_err(|f| {
        // Another process made the store in a dir this run created: it is that process's now.
        if f.code == ErrorCode::StoreInUse {
            created.keep();
        }
    })?);
    // Only now: holding the store means no other server's backup copy is in flight.
    datadir::remove_stale_copies(dir);
    let operator_token = datadir::operator_token(dir, settings.operator_token.as_deref())?;

    let backlog = settings.control.listen_backlog;
    let control_listener = bind(settings.control_listen, "control_listen", backlog).await?;
    let http_listener = bind(settings.operator_http_listen, "operator_http_listen", backlog).await?;
    let metrics_listener = bind(settings.metrics_listen, "metrics_listen", backlog).await?;
    let control_addr =
        control_listener.local_addr().map_err(|e| Failure::new(ErrorCode::IoError, e.to_string()))?;

    let mut names: Vec<String> = os::hostname().into_iter().collect();
    names.extend(["localhost".into(), "127.0.0.1".into(), "::1".into()]);
    names.extend(settings.advertised_endpoint.iter().map(|e| e.host().to_owned()));
    if !control_addr.ip().is_unspecified() {
        names.push(control_addr.ip().to_string());
    }
    names.extend(settings.cert_sans.iter().cloned());
    let (tls, generated) = portunus_control::load_or_generate(dir, &names)?;
    if generated {
        tracing::info!(event = "startup.certificate_generated", sha256 = %tls.sha256);
    }

    let identity = ServerIdentity { cert_sha256: tls.sha256.clone(), sans: tls.sans.clone(), control_addr };
    let version = env!("CARGO_PKG_VERSION");
    let metrics = Arc::new(ServerMetrics::new(version));
    let backup = Arc::new(DataDirBackup { store: store.clone(), dir: dir.to_path_buf() });
    let ports = Ports {
        store,
        clock: Arc::new(SystemClock),
        entropy: Arc::new(os::OsEntropy),
        hasher: Arc::new(portunus_password::Argon2Hasher),
        observer: Some(metrics.clone()),
    };
    let runtime = Runtime::new(ports, settings.clone(), identity, operator_token.hash())?;
    let started = runtime.clone();
    let onboarding = tokio::task::spawn_blocking(move || started.start_onboarding())
        .await
        .unwrap_or_else(|e| Err(Failure::new(ErrorCode::Internal, e.to_string())))?;
    if let Some((setup_token, expires_at)) = onboarding {
        // The one place the setup token is shown: a plain line, so `grep` finds it in a journal.
        eprintln!("Portunus onboarding setup token: {}", setup_token.expose());
        tracing::warn!(event = "onboarding.setup_token_issued", expires_at = %expires_at.to_rfc3339(),
            "no superadmin yet: POST /v1/auth/onboarding with the setup token printed above");
    }
    let operator_http = local_addr(&http_listener)?;
    let state = AppState::new(runtime.clone(), metrics).with_backup(backup).listening_at(operator_http);
    let addrs = BoundAddrs {
        control: control_addr,
        operator_http,
        metrics: local_addr(&metrics_listener)?,
        pid: std::process::id(),
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let service = ControlService::new(runtime.clone(), ServerInfo { version: version.to_owned() });
    let control = tokio::spawn({
        let tls = tls.clone();
        let stopped = stopped();
        async move { portunus_control::serve(control_listener, &tls, service, stopped).await }
    });
    let api = tokio::spawn(
        axum::serve(
            http_listener,
            portunus_http::api_router(state.clone())
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(stopped())
        .into_future(),
    );
    let metrics = tokio::spawn(
        axum::serve(metrics_listener, portunus_http::metrics_router(state).into_make_service())
            .with_graceful_shutdown(stopped())
            .into_future(),
    );
    let flusher = runtime.spawn_flusher(settings.control.stats_flush_interval);
    let retention = runtime.spawn_audit_retention();
    let quota_periods = runtime.spawn_quota_periods();
    let history = runtime.spawn_history();
    datadir::write_addrs(dir, &addrs)?;
    created.keep();
    tracing::info!(
        event = "server.started",
        version = %portunus_telemetry::version_text(version),
        control = %addrs.control,
        operator_http = %addrs.operator_http,
        metrics = %addrs.metrics,
        data_dir = %dir.display(),
        cert_sha256 = %tls.sha256,
    );

    shutdown.recv().await;
    tracing::info!(event = "server.stopping");
    runtime.sessions().close_all();
    let _ = stop_tx.send(true);
    // Every stream was told to end; connections that clients keep open are not waited on
    // past the drain (each client reconnects with backoff to whatever serves next).
    let mut control = control;
    if tokio::time::timeout(settings.control.control_drain, &mut control).await.is_err() {
        control.abort();
    }
    let _ = tokio::time::timeout(settings.control.shutdown_grace, async {
        let _ = api.await;
        let _ = metrics.await;
    })
    .await;
    flusher.abort();
    retention.abort();
    quota_periods.abort();
    history.abort();
    let flushed = runtime.flush_stats().await?;
    runtime.flush_history(true).await?;
    runtime.sync().await?;
    datadir::remove_addrs(dir);
    tracing::info!(event = "server.stopped", totals_flushed = flushed);
    Ok(())
}

pub fn open_store(path: &Path) -> Result<RedbStore, Failure> {
    RedbStore::open(path).map_err(|err| {
        let event = match &err {
            StoreError::InUse => "startup.store_in_use",
            StoreError::SchemaTooNew { .. } => "startup.schema_version_too_new",
            StoreError::Damaged { .. } => "startup.store_damaged",
            _ => "startup.store_error",
        };
        let failure = Failure::from(err);
        tracing::error!(event, path = %path.display(), message = %failure.message);
        failure
    })
}

/// Copies of the open store for `GET /v1/admin/backup`, made in the data dir, which is as
/// private as the store itself; the handler deletes each copy once it has opened it.
struct DataDirBackup {
    store: Arc<RedbStore>,
    dir: PathBuf,
}

impl StoreBackup for DataDirBackup {
    fn write_copy(&self) -> Result<PathBuf, Failure> {
        let mut tag = [0u8; 8];
        rand::fill(&mut tag);
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.dir.join(format!("{}{tag}{}", datadir::BACKUP_COPY_PREFIX, datadir::COPY_SUFFIX));
        self.store.backup_to(&path)?;
        Ok(path)
    }
}

/// Binds a listener with `backlog` pending connections (a fleet reconnecting at once must
/// not overflow the kernel's default queue of 128).
async fn bind(addr: std::net::SocketAddr, key: &str, backlog: u32) -> Result<TcpListener, Failure> {
    let listen = || {
        let socket =
            if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    listen().map_err(|err| {
        // Both are the operator's address to fix: the documented bind failure (exit 5).
        let (code, why) = match err.kind() {
            std::io::ErrorKind::AddrInUse => (ErrorCode::PortInUse, "in use"),
            std::io::ErrorKind::AddrNotAvailable => (ErrorCode::PortInUse, "not an address of this host"),
            _ => (ErrorCode::IoError, "cannot listen"),
        };
        tracing::error!(event = "startup.bind_failed", key, addr = %addr, error = %err);
        Failure::new(code, format!("{key} {addr}: {why} ({err})"))
    })
}

fn local_addr(listener: &TcpListener) -> Result<std::net::SocketAddr, Failure> {
    listener.local_addr().map_err(|e| Failure::new(ErrorCode::IoError, e.to_string()))
}
