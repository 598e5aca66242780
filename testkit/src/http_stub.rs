//! One-connection HTTP servers that answer as a misbehaving cloud would, for the providers'
//! client tests (answers too large, never finished, cut off).

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Accepts one connection on loopback, reads the request head, writes `head`, then runs `then`
/// with the socket.
pub async fn serve_once<F, Fut>(head: &'static str, then: F) -> anyhow::Result<SocketAddr>
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        if sock.write_all(head.as_bytes()).await.is_ok() {
            then(sock).await;
        }
    });
    Ok(addr)
}

/// Accepts one connection on loopback, reads the request head, writes `head`, then neither
/// writes nor closes for a minute: an answer stalled after its head (or part of its body).
pub async fn stall_after(head: &'static str) -> anyhow::Result<SocketAddr> {
    serve_once(head, |sock| async move {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        drop(sock);
    })
    .await
}

/// Answers one request `200` with a chunked JSON body of spaces that never ends: 1 MiB chunks
/// until the client hangs up. The counter says how many body bytes were sent.
pub async fn endless_chunked() -> anyhow::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let addr = serve_once(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        move |mut sock| async move {
            let chunk = vec![b' '; 1 << 20];
            let head = format!("{:x}\r\n", chunk.len());
            loop {
                let ok = sock.write_all(head.as_bytes()).await.is_ok()
                    && sock.write_all(&chunk).await.is_ok()
                    && sock.write_all(b"\r\n").await.is_ok();
                if !ok {
                    return;
                }
                counter.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        },
    )
    .await?;
    Ok((addr, sent))
}
