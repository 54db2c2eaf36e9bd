//! The gateway's side of the tunnel: the handshake, and the table of live tunnels by label.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use alloy::primitives::{Address, Signature};
use futures::{SinkExt, StreamExt};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};
use tokio_util::sync::CancellationToken;

use super::{Challenge, Handshake, PROTOCOL_VERSION, WsIo, challenge_message, unix_now};
use crate::{
    directory::{Directory, Server},
    label::Label,
    proxy::Body,
};

/// A tunnel's HTTP/2 handle; `None` while its HTTP/2 handshake is under way.
type SenderSlot = watch::Receiver<Option<SendRequest<Body>>>;

#[derive(Clone, Debug)]
struct Entry {
    id: u64,
    payee: Address,
    sender: SenderSlot,
    /// Fired when the entry leaves the table: the tunnel then closes once its requests are done.
    retired: CancellationToken,
}

/// The live tunnels, one per label at most.
#[derive(Default, Debug)]
pub struct TunnelTable {
    tunnels: Mutex<HashMap<Label, Entry>>,
    next_id: AtomicU64,
}

impl TunnelTable {
    /// The tunnel of `label`: the payee that opened it and a handle to send requests down it. Waits
    /// for a tunnel whose handshake is finishing (an agent is told "accepted" before the gateway's
    /// HTTP/2 side is ready, so its first requests may arrive in between).
    pub(crate) async fn sender(&self, label: &Label) -> Option<(Address, SendRequest<Body>)> {
        let entry = self.lock().get(label).cloned()?;
        let mut slot = entry.sender.clone();
        let sender = slot.wait_for(Option::is_some).await.ok()?.clone()?;
        if sender.is_closed() {
            self.remove_if(label, entry.id);
            return None;
        }
        Some((entry.payee, sender))
    }

    /// The labels with a tunnel up, sorted.
    pub fn labels(&self) -> Vec<Label> {
        let tunnels = self.lock();
        let open = |e: &Entry| e.sender.borrow().as_ref().is_none_or(|s| !s.is_closed());
        let mut labels: Vec<Label> = tunnels
            .iter()
            .filter(|(_, e)| open(e))
            .map(|(l, _)| l.clone())
            .collect();
        labels.sort();
        labels
    }

    /// Closes the tunnel of `label` (e.g. its payee changed): no new requests go down it, and it
    /// closes once those in flight are done.
    pub fn remove(&self, label: &Label) {
        if let Some(old) = self.lock().remove(label) {
            old.retired.cancel();
        }
    }

    fn insert(
        &self,
        label: Label,
        payee: Address,
        sender: SenderSlot,
        retired: CancellationToken,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.lock().insert(
            label.clone(),
            Entry {
                id,
                payee,
                sender,
                retired,
            },
        ) {
            tracing::info!(%label, "tunnel replaced by a newer one");
            old.retired.cancel();
        }
        id
    }

    fn remove_if(&self, label: &Label, id: u64) {
        let mut tunnels = self.lock();
        if tunnels.get(label).is_some_and(|e| e.id == id)
            && let Some(old) = tunnels.remove(label)
        {
            old.retired.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Label, Entry>> {
        self.tunnels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Settings of the gateway's side of the tunnel.
#[derive(Debug, Clone)]
pub struct TunnelServerConfig {
    /// Put in every challenge; agents may insist on it.
    pub gateway_id: String,
    /// How long an agent has to complete the handshake (and to answer the challenge).
    pub handshake_timeout: Duration,
    /// HTTP/2 keep-alive ping interval on the tunnel; a tunnel that misses a ping is closed.
    pub keepalive: Duration,
    /// How long a replaced tunnel may finish its requests in flight before it is cut.
    pub retire_grace: Duration,
}

struct Refusal(&'static str, String);

/// Runs one tunnel WebSocket to its end: handshake, then the HTTP/2 connection, registered in `table`
/// while it lives. Returns when the socket closes or `shutdown` fires.
pub async fn serve_tunnel<S>(
    mut ws: WebSocketStream<S>,
    directory: Arc<dyn Directory>,
    table: Arc<TunnelTable>,
    config: TunnelServerConfig,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = tokio::time::timeout(
        config.handshake_timeout,
        handshake(&mut ws, &*directory, &config),
    );
    let (label, payee) = match handshake.await {
        Ok(Ok(ok)) => ok,
        Ok(Err(Refusal(error, hint))) => {
            tracing::info!(error, %hint, "tunnel refused");
            let msg = Handshake::Refused {
                error: error.to_owned(),
                hint,
            };
            let _ = send(&mut ws, &msg).await;
            let _ = ws.close(None).await;
            return;
        }
        Err(_) => {
            tracing::info!("tunnel handshake timed out");
            return;
        }
    };
    // Registered before "accepted" goes out, so that no request can find the label without a tunnel.
    let (slot, rx) = watch::channel(None);
    let retired = CancellationToken::new();
    let id = table.insert(label.clone(), payee, rx, retired.clone());
    if send(&mut ws, &Handshake::Accepted).await.is_err() {
        table.remove_if(&label, id);
        return;
    }
    let io = TokioIo::new(WsIo::new(ws));
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(config.keepalive)
        .keep_alive_timeout(config.keepalive)
        .keep_alive_while_idle(true)
        .adaptive_window(true)
        .handshake::<_, Body>(io)
        .await;
    let (sender, conn) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(%label, error = %e, "tunnel HTTP/2 handshake failed");
            table.remove_if(&label, id);
            return;
        }
    };
    slot.send_replace(Some(sender));
    tracing::info!(%label, %payee, "tunnel up");
    tokio::pin!(conn);
    tokio::select! {
        res = &mut conn => if let Err(e) = res { tracing::info!(%label, error = %e, "tunnel closed") },
        () = shutdown.cancelled() => {}
        () = retired.cancelled() => {
            // Replaced or removed: drop the last request handle, so that HTTP/2 shuts down once the
            // requests in flight are answered (or the grace period ends).
            drop(slot);
            tokio::select! {
                _ = &mut conn => {}
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(config.retire_grace) => {}
            }
        }
    }
    table.remove_if(&label, id);
    tracing::info!(%label, "tunnel down");
}

async fn send<S>(ws: &mut WebSocketStream<S>, msg: &Handshake) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let text = serde_json::to_string(msg).map_err(|_| ())?;
    ws.send(Message::text(text)).await.map_err(|_| ())
}

async fn recv<S>(ws: &mut WebSocketStream<S>) -> Result<Handshake, Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).map_err(|_| {
                    Refusal(
                        "malformed handshake message",
                        "speak the khachapuri tunnel protocol v1".into(),
                    )
                });
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return Err(Refusal("socket closed during handshake", String::new())),
        }
    }
}

async fn handshake<S>(
    ws: &mut WebSocketStream<S>,
    directory: &dyn Directory,
    config: &TunnelServerConfig,
) -> Result<(Label, Address), Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Handshake::Hello { label, version } = recv(ws).await? else {
        return Err(Refusal(
            "expected hello",
            "start with {\"type\":\"hello\",\"label\":...}".into(),
        ));
    };
    if version != PROTOCOL_VERSION {
        return Err(Refusal(
            "unsupported tunnel protocol version",
            format!("this gateway speaks v{PROTOCOL_VERSION}"),
        ));
    }
    let label = Label::new(&label).map_err(|e| Refusal("invalid label", format!("{e}")))?;
    let route = directory
        .lookup(&label)
        .await
        .map_err(|e| Refusal("directory unavailable", format!("{e}; retry later")))?
        .ok_or_else(|| {
            Refusal(
                "unknown label",
                format!("register {label} in the Registry first"),
            )
        })?;
    if route.server != Server::Tunnel {
        return Err(Refusal(
            "label is not served through the tunnel",
            format!("set the resolver's server record of {label} to \"tunnel:\""),
        ));
    }
    let payee = route.payee.ok_or_else(|| {
        Refusal(
            "label has no payee",
            format!("set a payee on the resolver of {label}"),
        )
    })?;

    let challenge = Challenge {
        label: label.to_string(),
        gateway: config.gateway_id.clone(),
        nonce: alloy::hex::encode(rand::random::<[u8; 32]>()),
        expires_at: unix_now() + config.handshake_timeout.as_secs().max(1),
    };
    send(ws, &Handshake::Challenge(challenge.clone()))
        .await
        .map_err(|()| Refusal("socket closed during handshake", String::new()))?;
    let Handshake::Answer { signature } = recv(ws).await? else {
        return Err(Refusal(
            "expected answer",
            "answer the challenge with its signature".into(),
        ));
    };
    if unix_now() > challenge.expires_at {
        return Err(Refusal(
            "challenge expired",
            "answer within the handshake timeout".into(),
        ));
    }
    let bad_sig = || {
        Refusal(
            "bad signature",
            "sign challenge_message() with EIP-191 (personal_sign)".into(),
        )
    };
    let bytes = alloy::hex::decode(&signature).map_err(|_| bad_sig())?;
    let signature = Signature::try_from(bytes.as_slice()).map_err(|_| bad_sig())?;
    let signer = signature
        .recover_address_from_msg(challenge_message(&challenge))
        .map_err(|_| bad_sig())?;
    if signer != payee {
        return Err(Refusal(
            "signer is not the label's payee",
            format!(
                "sign with the key of {payee}, the payee of {label}'s resolver (signed by {signer})"
            ),
        ));
    }
    Ok((label, payee))
}
