//! The issuer's HTTP/1.1 server: `axum::serve` minus its trust in clients. A public
//! endpoint meets clients that open a connection and never finish a request (slowloris)
//! or park idle connections; each one would hold a task and its buffers for ever. Here:
//!
//! - the head of every request must arrive within the header timeout, counted from the
//!   connection's accept (first request) or from the first byte after an idle spell;
//! - a keep-alive connection idle between requests is closed after the idle timeout;
//! - at most `max_connections` connections are open at once; past that, new ones wait in
//!   the kernel's listen backlog until one closes (the bound is what one issuer's memory
//!   is sized for, and the timeouts above keep slots turning over);
//! - the body's deadline is the handler's (`api`), since only the handler reads it.
//!
//! The clocks cost the hot path little: the connection's phase is one atomic word
//! written when a request starts and ends, and a timer is armed only while a read waits.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The edges of the server (see the module comment).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    /// `header_timeout` or `idle_timeout`.
    pub reason: &'static str,
}

/// Open connections, and connections the server closed on a timeout.
#[derive(Clone, Default)]
pub struct HttpMetrics {
    pub open: Gauge,
    pub closed: Family<ClosedLabels, Counter>,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("couponrush_issuer_http_connections", "HTTP connections open now", metrics.open.clone());
        registry.register(
            "couponrush_issuer_http_closed",
            "HTTP connections the issuer closed because the client was too slow or idle, by reason",
            metrics.closed.clone(),
        );
        metrics
    }
}

/// Serves `router` on `listener` until `shutdown`, then stops accepting, asks every
/// connection to finish its request in flight, and waits for them (the caller bounds
/// that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: HttpMetrics,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    loop {
        // Take a slot before accepting: when all are taken the server stops accepting,
        // and the kernel's backlog holds new connections (a client's connect timeout
        // is the limit of that wait), instead of taking ever more memory.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, mostly: wait for some to close.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let (router, metrics, shutdown) = (router.clone(), metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            metrics.open.inc();
            serve_connection(stream, router, limits, &metrics, shutdown).await;
            metrics.open.dec();
            drop(slot);
        });
    }
    // Every connection holds a slot until it ends: all slots back means all ended.
    let _all = slots.acquire_many(limits.max_connections).await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    metrics: &HttpMetrics,
    shutdown: CancellationToken,
) {
    let phase = Arc::new(Phase::new());
    let io = TokioIo::new(Watched::new(stream, phase.clone(), limits, metrics.closed.clone()));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        phase.request_started();
        let phase = phase.clone();
        let response = router.clone().oneshot(request.map(Body::new));
        async move {
            let response = response.await;
            phase.request_ended();
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Where a connection is, with the instant it got there: waiting for (the rest of) a
/// request head, inside a request (headers read; the handler runs and owns the body's
/// deadline), or idle after a response. One word, so that both the reads and the
/// service update it without a lock.
struct Phase {
    started: Instant,
    /// `(milliseconds since started) << 2 | phase`.
    word: AtomicU64,
    /// The read that found no deadline while a request ran: woken when the request
    /// ends, so that it arms the idle deadline (hyper may not read again by itself).
    reader: futures::task::AtomicWaker,
}

const HEAD: u64 = 0;
const BUSY: u64 = 1;
const IDLE: u64 = 2;

impl Phase {
    fn new() -> Self {
        Self { started: Instant::now(), word: AtomicU64::new(HEAD), reader: futures::task::AtomicWaker::new() }
    }

    fn enter(&self, phase: u64) {
        let since = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX >> 2);
        self.word.store(since << 2 | phase, Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.word.store(BUSY, Ordering::Relaxed);
    }

    fn request_ended(&self) {
        self.enter(IDLE);
        self.reader.wake();
    }

    /// Bytes arrived: after an idle spell, a new request head has begun.
    fn bytes_arrived(&self) {
        if self.word.load(Ordering::Relaxed) & 3 == IDLE {
            self.enter(HEAD);
        }
    }

    /// The deadline of the current phase, and the reason a connection past it is closed.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        let word = self.word.load(Ordering::Relaxed);
        let since = self.started + Duration::from_millis(word >> 2);
        match word & 3 {
            HEAD => Some((since + limits.header_timeout, "header_timeout")),
            IDLE => Some((since + limits.idle_timeout, "idle_timeout")),
            _ => None,
        }
    }
}

/// The connection's socket, whose reads fail with `TimedOut` once the phase's deadline
/// passes while hyper waits for bytes; hyper then closes the connection.
struct Watched {
    io: TcpStream,
    phase: Arc<Phase>,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
    closed: Family<ClosedLabels, Counter>,
}

impl Watched {
    fn new(io: TcpStream, phase: Arc<Phase>, limits: Limits, closed: Family<ClosedLabels, Counter>) -> Self {
        let timer = Box::pin(tokio::time::sleep(limits.header_timeout));
        Self { io, phase, limits, timer, closed }
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.phase.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                // Inside a request there is no deadline of ours, but the request's end must
                // make this read look again (registered, then checked once more, so that an
                // end in between is not missed).
                let found = this.phase.deadline(&this.limits).or_else(|| {
                    this.phase.reader.register(cx.waker());
                    this.phase.deadline(&this.limits)
                });
                let Some((deadline, reason)) = found else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.closed.get_or_create(&ClosedLabels { reason }).inc();
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits =
        Limits { header_timeout: Duration::from_secs(5), idle_timeout: Duration::from_secs(60), max_connections: 1 };

    /// The deadline is `limit` after now, give or take the milliseconds the test takes.
    fn assert_due_in(phase: &Phase, limit: Duration, reason: &str) {
        let (deadline, why) = phase.deadline(&LIMITS).expect("a deadline");
        let expected = Instant::now() + limit;
        assert_eq!(why, reason);
        assert!(
            deadline <= expected && expected - deadline < Duration::from_millis(100),
            "{deadline:?} vs {expected:?}"
        );
    }

    #[test]
    fn the_phase_decides_the_deadline() {
        let phase = Phase::new();
        assert_due_in(&phase, LIMITS.header_timeout, "header_timeout");
        phase.request_started();
        assert_eq!(phase.deadline(&LIMITS), None, "inside a request the handler's deadlines rule");
        phase.bytes_arrived();
        assert_eq!(phase.deadline(&LIMITS), None, "body bytes leave the request running");
        phase.request_ended();
        assert_due_in(&phase, LIMITS.idle_timeout, "idle_timeout");
        phase.bytes_arrived();
        assert_due_in(&phase, LIMITS.header_timeout, "header_timeout");
        // More bytes of the same head do not move its deadline.
        let first = phase.deadline(&LIMITS);
        std::thread::sleep(Duration::from_millis(5));
        phase.bytes_arrived();
        assert_eq!(phase.deadline(&LIMITS), first);
    }
}
