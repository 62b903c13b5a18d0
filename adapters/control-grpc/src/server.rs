//! The server side: the `Control.Channel` stream and `Enrollment.Redeem`, served over TLS.
//!
//! Invariants: a stream is registered only after authentication and after its Welcome and
//! full replay were queued, so replay always precedes any later push; no token, code or key
//! is ever logged.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use pb::control_server::{Control, ControlServer};
use pb::enrollment_server::{Enrollment, EnrollmentServer};
use portunus_core::capability;
use portunus_core::config::ControlPolicy;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ports::SessionInfo;
use portunus_core::ports::Sessions;
use portunus_core::secret::Secret;
use portunus_proto::v1 as pb;
use portunus_runtime::Runtime;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{self, ClientEvent};
use crate::tls::TlsIdentity;

/// Metadata key carrying the stable reason of an authentication failure.
pub const REASON_KEY: &str = "portunus-reason";

/// What the server says about itself in Welcome.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Version string.
    pub version: String,
}

/// The tonic services.
#[derive(Clone)]
pub struct ControlService {
    runtime: Runtime,
    info: ServerInfo,
    policy: ControlPolicy,
}

impl ControlService {
    /// Wires the services to the control runtime.
    pub fn new(runtime: Runtime, info: ServerInfo) -> Self {
        let policy = runtime.settings().control;
        ControlService { runtime, info, policy }
    }
}

/// TCP keepalive on a control connection: the kernel probes an idle peer, so an idle
/// stream costs the process nothing, and a dead one is dropped after
/// `idle + interval × probes`.
pub(crate) fn set_keepalive(tcp: &tokio::net::TcpStream, policy: &ControlPolicy) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(policy.keepalive_idle)
        .with_interval(policy.keepalive_interval)
        .with_retries(policy.keepalive_probes);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive)
}

fn status_of(failure: &Failure) -> Status {
    let mut status = match failure.code {
        ErrorCode::Unauthenticated | ErrorCode::TokenRevoked => {
            Status::unauthenticated(failure.message.clone())
        }
        ErrorCode::EnrollmentNotFound | ErrorCode::EnrollmentExpired | ErrorCode::EnrollmentConsumed => {
            Status::permission_denied(failure.message.clone())
        }
        ErrorCode::FailedPrecondition => Status::failed_precondition(failure.message.clone()),
        ErrorCode::ClientAlreadyConnected => Status::already_exists(failure.message.clone()),
        ErrorCode::InvalidRequest | ErrorCode::EnrollUriInvalid => {
            Status::invalid_argument(failure.message.clone())
        }
        _ => Status::internal(failure.message.clone()),
    };
    if let Ok(value) = MetadataValue::try_from(failure.code.as_str()) {
        status.metadata_mut().insert(REASON_KEY, value);
    }
    status
}

type ChannelStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Control for ControlService {
    type ChannelStream = ChannelStream;

    async fn channel(
        &self,
        request: Request<Streaming<pb::ClientMessage>>,
    ) -> Result<Response<Self::ChannelStream>, Status> {
        let remote = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .unwrap_or_default();
        let client = match self.runtime.authenticate_client(&token) {
            Ok(client) => client,
            Err(failure) => {
                tracing::warn!(event = "auth.failure", reason = failure.reason(), remote = %remote, kind = "client_token");
                let failure = Failure::new(failure.code(), failure.reason());
                return Err(status_of(&failure));
            }
        };
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.policy.hello_timeout, inbound.message()).await;
        let (version, capabilities, instance) = match first.map(|m| m.map(|m| m.map(convert::client_event))) {
            Ok(Ok(Some(ClientEvent::Hello { version, capabilities, instance }))) => {
                (version, capabilities, instance)
            }
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        let caps = capability::parse_set(capabilities.iter().map(String::as_str));
        let (tx, rx) = mpsc::unbounded_channel();
        let info = SessionInfo {
            capabilities: caps.clone(),
            version: version.clone(),
            connected_at: self.runtime.now(),
            instance,
        };
        // The runtime queues the plan and registers the stream in commit order: the replay
        // precedes any later push, and a revoke since the handshake refuses the stream.
        let (registration, n_rules) = match self.runtime.open_session(&token, &version, info, tx).await {
            Ok(opened) => opened,
            Err(failure) if failure.code == ErrorCode::ClientAlreadyConnected => {
                tracing::warn!(
                    event = "client.refused",
                    client = %client.name,
                    client_id = %client.id,
                    reason = %failure.code,
                    remote = %remote,
                    message = %failure.message,
                );
                return Err(status_of(&failure));
            }
            Err(failure) => {
                tracing::warn!(event = "auth.failure", reason = %failure.code, remote = %remote, kind = "client_token");
                return Err(status_of(&failure));
            }
        };
        let cap_names: Vec<&str> = caps.iter().map(|c| c.as_str()).collect();
        tracing::info!(
            event = "client.connected",
            client = %client.name,
            client_id = %client.id,
            version = %version,
            capabilities = %cap_names.join(","),
            rules_replayed = n_rules,
            remote = %remote,
        );

        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let reason = loop {
                tokio::select! {
                    () = registration.stop.notified() => break None,
                    msg = inbound.message() => match msg {
                        Ok(Some(msg)) => handle_client_message(&runtime, &client.id, msg).await,
                        Ok(None) => break Some("stream_closed"),
                        Err(status) => {
                            tracing::debug!(client = %client.name, error = %status, "control stream error");
                            break Some("stream_error");
                        }
                    },
                }
            };
            if runtime.sessions().unregister(&client.id, registration.generation)
                && let Some(reason) = reason
            {
                tracing::info!(event = "client.disconnected", client = %client.name, client_id = %client.id, reason);
            }
            // A stream replaced by a newer one leaves the newer one's live counters alone.
            if runtime.sessions().session(&client.id).is_none()
                && let Err(err) = runtime.session_closed(&client.id).await
            {
                tracing::warn!(event = "store.error", error = %err, "could not record a disconnect");
            }
        });
        let server_version = self.info.version.clone();
        // The plan becomes two messages on the wire: Welcome, then the full rule set.
        let outbound = UnboundedReceiverStream::new(rx)
            .flat_map(move |item| futures::stream::iter(convert::outbound_to_wire(item, &server_version)));
        Ok(Response::new(Box::pin(outbound)))
    }
}

async fn handle_client_message(
    runtime: &Runtime,
    client: &portunus_core::ids::ClientId,
    msg: pb::ClientMessage,
) {
    match convert::client_event(msg) {
        ClientEvent::Outcome(rule, event) => match runtime.rule_outcome(client, rule, event).await {
            Ok(Some(portunus_core::rule::RuleState::Failed { code, message })) => {
                tracing::warn!(event = "rule.failed", rule = %rule, code = %code, message = %message);
            }
            Ok(Some(_)) => tracing::info!(event = "rule.activated", rule = %rule),
            Ok(None) => {}
            Err(err) => {
                tracing::error!(event = "store.error", error = %err, "could not record a rule outcome")
            }
        },
        ClientEvent::Stats(reports, sni) => {
            runtime.record_sni_stats(client, sni);
            if let Err(err) = runtime.record_stats(client, reports).await {
                tracing::warn!(event = "store.error", error = %err, "could not record stats");
            }
        }
        ClientEvent::Hello { .. } | ClientEvent::Ignored => {}
    }
}

#[tonic::async_trait]
impl Enrollment for ControlService {
    async fn redeem(
        &self,
        request: Request<pb::RedeemRequest>,
    ) -> Result<Response<pb::RedeemResponse>, Status> {
        let remote = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let code = Secret::new(request.into_inner().code);
        match self.runtime.redeem(code).await {
            Ok(redeemed) => {
                tracing::info!(
                    event = "client.enrolled",
                    client = %redeemed.client.name,
                    client_id = %redeemed.client.id,
                    remote = %remote,
                );
                Ok(Response::new(convert::redeem_response(redeemed)))
            }
            Err(failure) => {
                tracing::warn!(event = "enroll.redeem_failed", code = %failure.code, remote = %remote);
                Err(status_of(&failure))
            }
        }
    }
}

/// Serves both services on `listener` with TLS until `shutdown` resolves. Long-lived streams
/// are ended by [`portunus_runtime::SessionRegistry::close_all`], which the caller runs when shutdown starts.
pub async fn serve(
    listener: TcpListener,
    identity: &TlsIdentity,
    service: ControlService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    let policy = service.policy;
    let tls = Arc::new(crate::tls::server_config(identity)?);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (conn_tx, conn_rx) = mpsc::channel(64);
    // Shutdown stops the accept loop at once, so clients do not reconnect into a server
    // that is draining; tonic then ends its connections.
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    // TLS handshakes run off the accept loop so one slow peer cannot stall the others.
    let accept_task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, _) = match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(event = "control.accept_failed", error = %err);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if let Err(err) = set_keepalive(&tcp, &policy) {
                tracing::debug!(error = %err, "could not set TCP keepalive on a control connection");
            }
            let acceptor = acceptor.clone();
            let conn_tx = conn_tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(policy.tls_handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = conn_tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(error = %err, "control TLS handshake failed"),
                    Err(_) => tracing::debug!("control TLS handshake timed out"),
                }
            });
        }
    });
    let max = policy.max_message_bytes;
    // No HTTP/2 pings: the transport's keepalive is TCP's (see `set_keepalive`).
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(None)
        .add_service(
            ControlServer::new(service.clone()).max_decoding_message_size(max).max_encoding_message_size(max),
        )
        .add_service(
            EnrollmentServer::new(service).max_decoding_message_size(max).max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(conn_rx), shutdown)
        .await
        .map_err(|e| Failure::new(ErrorCode::IoError, format!("control listener: {e}")));
    accept_task.abort();
    result
}
