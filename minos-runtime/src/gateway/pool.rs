//! The keep-alive connections of one worker thread to the service instances.
//!
//! Each worker keeps its own idle HTTP/1.1 connections by instance, so a request checks one out
//! without contending with other threads. A connection has no task of its own: the request holding
//! it drives it (while the request goes out and the head comes back, then from [`UpstreamBody`]
//! while the body streams), so an exchange wakes only the task of the caller's connection, as an
//! event loop would. It goes back to the pool the moment its response body has been passed on
//! whole; a connection whose answer is cut short, or that the service closed, is dropped instead. A
//! reused connection found closed before the request went out is replaced transparently.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::http::uri::Authority;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::table::FastMap;

/// How often idle connections are looked over: one idle for two of these periods is closed.
pub(crate) const SWEEP_PERIOD: Duration = Duration::from_secs(30);
/// Idle connections kept per instance (and worker).
const MAX_IDLE: usize = 512;

/// One HTTP/1.1 connection to an instance: the handle requests are sent with, and the connection
/// itself, driven by whichever request holds it (no task of its own: the request's task reads and
/// writes it, so an exchange wakes no other task).
#[derive(Debug)]
struct Upstream {
    sender: SendRequest<Full<Bytes>>,
    /// `None` once it has ended.
    connection: Option<Connection<TokioIo<TcpStream>, Full<Bytes>>>,
}

impl Upstream {
    /// Makes what progress the connection can; whether it is still open.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(connection) = &mut self.connection else {
            return false;
        };
        match Pin::new(connection).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(error) = result {
                    tracing::debug!(error = %describe(&error), "connection to an instance ended");
                }
                self.connection = None;
                false
            }
        }
    }

    /// Whether it is open, having noticed a close by the instance while it was idle.
    fn still_open(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop())) && !self.sender.is_closed()
    }

    /// Waits until a request can be sent; `false` when the connection closed instead.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            let open = self.drive(cx);
            match self.sender.poll_ready(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(true),
                Poll::Ready(Err(_)) => Poll::Ready(false),
                Poll::Pending if !open => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// A worker's connections to the instances. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    idle: Mutex<FastMap<Authority, Vec<Idle>>>,
    connect_timeout: Duration,
    /// Sweeps so far: idle times are counted in sweeps, so that no request reads the clock.
    sweeps: AtomicU64,
}

#[derive(Debug)]
struct Idle {
    upstream: Box<Upstream>,
    /// [`Inner::sweeps`] when it was put back.
    since: u64,
}

impl Idle {
    fn expired(&self, sweeps: u64) -> bool {
        sweeps.saturating_sub(self.since) >= 2
    }
}

/// Why a request got no response head.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made: nothing was sent.
    Connect(String),
    /// A new connection failed before the request went out: nothing was sent.
    NotSent(String),
    /// The connection failed while the request was under way, or after.
    Failed(String),
}

/// An error with its sources.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Pool {
    /// An empty pool whose new connections wait at most `connect_timeout`.
    pub(crate) fn new(connect_timeout: Duration) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                idle: Mutex::new(FastMap::default()),
                connect_timeout,
                sweeps: AtomicU64::new(0),
            }),
        }
    }

    /// An idle connection to `authority` that is still open.
    fn checkout(&self, authority: &Authority) -> Option<Box<Upstream>> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let connections = idle.get_mut(authority)?;
        let sweeps = self.inner.sweeps.load(Ordering::Relaxed);
        while let Some(mut connection) = connections.pop() {
            if !connection.expired(sweeps) && connection.upstream.still_open() {
                return Some(connection.upstream);
            }
        }
        None
    }

    /// Puts a connection whose exchange is complete back.
    fn release(&self, authority: Authority, upstream: Box<Upstream>) {
        if upstream.connection.is_none() || upstream.sender.is_closed() {
            return;
        }
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let connections = idle.entry(authority).or_default();
        if connections.len() < MAX_IDLE {
            connections.push(Idle {
                upstream,
                since: self.inner.sweeps.load(Ordering::Relaxed),
            });
        }
    }

    /// Closes the connections that are closed or idle too long, and forgets instances with none
    /// (every [`SWEEP_PERIOD`]).
    pub(crate) fn sweep(&self) {
        let sweeps = self.inner.sweeps.fetch_add(1, Ordering::Relaxed) + 1;
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, connections| {
            connections.retain_mut(|c| !c.expired(sweeps) && c.upstream.still_open());
            !connections.is_empty()
        });
    }

    /// A new connection (boxed: it is large, and moves between the pool and requests).
    async fn connect(&self, authority: &Authority) -> Result<Box<Upstream>, String> {
        let address = authority.as_str();
        let stream = tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                format!(
                    "connecting to {address}: no answer within {:?}",
                    self.inner.connect_timeout
                )
            })?
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {address}: {}", describe(&e)))?;
        Ok(Box::new(Upstream {
            sender,
            connection: Some(connection),
        }))
    }

    /// Sends `request` (origin-form URI, `Host` set) to `authority` on an idle connection or a new
    /// one, and answers its response head; the body hands the connection back when it is read
    /// whole.
    pub(crate) async fn send(
        &self,
        authority: &Authority,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        loop {
            let (mut upstream, reused) = match self.checkout(authority) {
                Some(upstream) => (upstream, true),
                // Boxed: connecting is rare, and its future would make every request's larger.
                None => (
                    Box::pin(self.connect(authority))
                        .await
                        .map_err(SendError::Connect)?,
                    false,
                ),
            };
            if !upstream.sender.is_ready() && !upstream.ready().await {
                match reused {
                    true => continue,
                    false => {
                        return Err(SendError::NotSent(
                            "the instance closed the connection at once".into(),
                        ))
                    }
                }
            }
            let answer = upstream.sender.try_send_request(request);
            let mut answer = std::pin::pin!(answer);
            // The connection is driven here while the request goes out and the head comes back.
            let answered = poll_fn(|cx| {
                upstream.drive(cx);
                answer.as_mut().poll(cx)
            })
            .await;
            match answered {
                Ok(response) => {
                    let lease = Lease {
                        pool: self.clone(),
                        authority: authority.clone(),
                        upstream,
                    };
                    let (parts, body) = response.into_parts();
                    return Ok(Response::from_parts(parts, UpstreamBody::new(body, lease)));
                }
                Err(mut error) => match error.take_message() {
                    // A kept connection closed before this request went out: take another.
                    Some(unsent) if reused => request = unsent,
                    Some(_) => return Err(SendError::NotSent(describe(error.error()))),
                    None => return Err(SendError::Failed(describe(error.error()))),
                },
            }
        }
    }
}

/// A connection lent to one exchange.
#[derive(Debug)]
struct Lease {
    pool: Pool,
    authority: Authority,
    upstream: Box<Upstream>,
}

/// A service's response body, passed on frame by frame; the connection goes back to the pool when
/// the body ends, and is closed when the body is dropped before its end.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    fn new(body: Incoming, lease: Lease) -> UpstreamBody {
        let mut body = UpstreamBody {
            body,
            lease: Some(lease),
        };
        if body.body.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.release(lease.authority, lease.upstream);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // The connection reads what the body receives.
        if let Some(lease) = &mut this.lease {
            lease.upstream.drive(cx);
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            // A failed body leaves the connection unusable: it closes with the lease.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
