//! The server side: the `Control.Channel` stream and `Enrollment.Redeem`, served over TLS.
//!
//! Invariants: a stream is registered only after authentication and after its Welcome and
//! full replay were queued, so replay always precedes any later push; no token, code or key
//! is ever logged.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use pb::control_server::{Control, ControlServer};
use pb::enrollment_server::{Enrollment, EnrollmentServer};
use portunus_core::capability;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ids::Timestamp;
use portunus_core::ports::SessionInfo;
use portunus_core::rule::RuleEvent;
use portunus_core::secret::Secret;
use portunus_core::service::ControlPlane;
use portunus_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::link::GrpcClientLink;
use crate::tls::TlsIdentity;

/// How long a new stream may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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
    plane: Arc<ControlPlane>,
    link: Arc<GrpcClientLink>,
    info: ServerInfo,
}

impl ControlService {
    /// Wires the services to the control plane.
    pub fn new(plane: Arc<ControlPlane>, link: Arc<GrpcClientLink>, info: ServerInfo) -> Self {
        ControlService { plane, link, info }
    }
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
        let client = match self.plane.authenticate_client(&token) {
            Ok(client) => client,
            Err(failure) => {
                tracing::warn!(event = "auth.failure", reason = failure.reason(), remote = %remote, kind = "client_token");
                let failure = Failure::new(failure.code(), failure.reason());
                return Err(status_of(&failure));
            }
        };
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::ClientMessage { msg: Some(pb::client_message::Msg::Hello(hello)) }))) => hello,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        let caps = capability::parse_set(hello.capabilities.iter().map(String::as_str));
        let plan = self.plane.session_opened(&client.id, &hello.version).map_err(|f| status_of(&f))?;

        let (tx, rx) = mpsc::unbounded_channel();
        let welcome = pb::Welcome {
            client_id: client.id.to_string(),
            client_name: client.name.to_string(),
            settings: Some(convert::settings_to_wire(&plan.settings)),
            server_version: self.info.version.clone(),
            protocol_version: portunus_core::PROTOCOL_VERSION,
        };
        let replay = pb::RuleUpdate {
            full_sync: true,
            upsert: plan.rules.iter().map(|(id, def)| convert::rule_to_wire(*id, def)).collect(),
            remove: vec![],
        };
        // Both sends succeed: the receiver is still in scope.
        let _ = tx.send(Ok(pb::ServerMessage { msg: Some(pb::server_message::Msg::Welcome(welcome)) }));
        let _ = tx.send(Ok(pb::ServerMessage { msg: Some(pb::server_message::Msg::RuleUpdate(replay)) }));
        let info = SessionInfo {
            capabilities: caps.clone(),
            version: hello.version.clone(),
            connected_at: Timestamp::from_millis(unix_millis()),
        };
        let registration = self.link.register(&client.id, client.name.as_str(), info, tx);
        let cap_names: Vec<&str> = caps.iter().map(|c| c.as_str()).collect();
        tracing::info!(
            event = "client.connected",
            client = %client.name,
            client_id = %client.id,
            version = %hello.version,
            capabilities = %cap_names.join(","),
            rules_replayed = plan.rules.len(),
            remote = %remote,
        );

        let plane = self.plane.clone();
        let link = self.link.clone();
        tokio::spawn(async move {
            let reason = loop {
                tokio::select! {
                    () = registration.stop.notified() => break None,
                    msg = inbound.message() => match msg {
                        Ok(Some(msg)) => handle_client_message(&plane, &link, &client.id, msg),
                        Ok(None) => break Some("stream_closed"),
                        Err(status) => {
                            tracing::debug!(client = %client.name, error = %status, "control stream error");
                            break Some("stream_error");
                        }
                    },
                }
            };
            if link.unregister(&client.id, registration.generation)
                && let Some(reason) = reason
            {
                tracing::info!(event = "client.disconnected", client = %client.name, client_id = %client.id, reason);
            }
            if let Err(err) = plane.session_closed(&client.id) {
                tracing::warn!(event = "store.error", error = %err, "could not record a disconnect");
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

fn handle_client_message(
    plane: &ControlPlane,
    link: &GrpcClientLink,
    client: &portunus_core::ids::ClientId,
    msg: pb::ClientMessage,
) {
    match msg.msg {
        Some(pb::client_message::Msg::RuleStatus(status)) => {
            let rule = portunus_core::ids::RuleId::new(status.rule_id);
            let event = match pb::rule_status::State::try_from(status.state) {
                Ok(pb::rule_status::State::Active) => RuleEvent::Activated,
                Ok(pb::rule_status::State::Failed) => RuleEvent::Failed {
                    code: ErrorCode::parse(&status.code).unwrap_or(ErrorCode::Internal),
                    message: status.message.chars().take(512).collect(),
                },
                _ => return,
            };
            match plane.rule_outcome(client, rule, event) {
                Ok(Some(state)) => {
                    if let portunus_core::rule::RuleState::Failed { code, message } = &state {
                        tracing::warn!(event = "rule.failed", rule = %rule, code = %code, message = %message);
                    } else {
                        tracing::info!(event = "rule.activated", rule = %rule);
                    }
                    link.publish_outcome(rule, &state);
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::error!(event = "store.error", error = %err, "could not record a rule outcome")
                }
            }
        }
        Some(pb::client_message::Msg::Stats(report)) => {
            let reports = report.rules.iter().map(convert::report_from_wire).collect();
            if let Err(err) = plane.record_stats(client, reports) {
                tracing::warn!(event = "store.error", error = %err, "could not record stats");
            }
        }
        Some(pb::client_message::Msg::Hello(_)) | None => {}
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
        match self.plane.redeem(&code) {
            Ok(redeemed) => {
                tracing::info!(
                    event = "client.enrolled",
                    client = %redeemed.client.name,
                    client_id = %redeemed.client.id,
                    remote = %remote,
                );
                Ok(Response::new(pb::RedeemResponse {
                    client_id: redeemed.client.id.to_string(),
                    client_name: redeemed.client.name.to_string(),
                    token: redeemed.token.expose().to_owned(),
                    server_endpoint: redeemed.endpoint,
                }))
            }
            Err(failure) => {
                tracing::warn!(event = "enroll.redeem_failed", code = %failure.code, remote = %remote);
                Err(status_of(&failure))
            }
        }
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Serves both services on `listener` with TLS until `shutdown` resolves. Long-lived streams
/// are ended by [`GrpcClientLink::close_all`], which the caller runs when shutdown starts.
pub async fn serve(
    listener: TcpListener,
    identity: &TlsIdentity,
    service: ControlService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    let tls = Arc::new(crate::tls::server_config(identity)?);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (conn_tx, conn_rx) = mpsc::channel(64);
    // TLS handshakes run off the accept loop so one slow peer cannot stall the others.
    let accept_task = tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(event = "control.accept_failed", error = %err);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let conn_tx = conn_tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = conn_tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(error = %err, "control TLS handshake failed"),
                    Err(_) => tracing::debug!("control TLS handshake timed out"),
                }
            });
        }
    });
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(ControlServer::new(service.clone()))
        .add_service(EnrollmentServer::new(service))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(conn_rx), shutdown)
        .await
        .map_err(|e| Failure::new(ErrorCode::IoError, format!("control listener: {e}")));
    accept_task.abort();
    result
}
