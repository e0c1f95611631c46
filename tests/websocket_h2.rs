//! Websockets from HTTP/2 clients: an extended CONNECT (RFC 8441) is forwarded to an HTTP/1.1
//! upstream as a websocket upgrade, answered 200, and tunnelled both ways.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/1.1 upstream that accepts a websocket upgrade only with a handshake key, then echoes
/// bytes upper-cased (so an echo by rouse itself could not pass for it).
async fn websocket_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                let head = read_head(&mut stream).await.unwrap_or_default();
                let ok = head.starts_with("GET /chat ")
                    && head_header(&head, "upgrade")
                        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
                    && head_header(&head, "sec-websocket-key").is_some_and(|k| k.len() == 24);
                if !ok {
                    let msg = format!("not a websocket handshake:\n{head}");
                    let resp = format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                        msg.len()
                    );
                    let _ = stream.get_mut().write_all(resp.as_bytes()).await;
                    return;
                }
                let switch = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n";
                if stream.get_mut().write_all(switch.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream
                        .get_mut()
                        .write_all(&buf[..n].to_ascii_uppercase())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn http2_extended_connect_websocket_is_tunnelled_to_an_http1_upstream() {
    let sb = Sandbox::new();
    let upstream = websocket_backend().await;
    let rouse = Rouse::serve(&sb, &none_route("ws", &["ws.test"], upstream));

    let tcp = tokio::net::TcpStream::connect(rouse.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(conn);
    // A first request lets the server's SETTINGS (which enable extended CONNECT) arrive.
    let warmup = http::Request::get("http://ws.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let _ = sender.send_request(warmup).await;

    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("http://ws.test/chat")
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = sender
        .send_request(req)
        .await
        .expect("extended CONNECT sent");
    assert_eq!(resp.status(), 200, "{resp:?}");
    let upgraded = hyper::upgrade::on(resp).await.expect("stream upgraded");
    let mut tunnel = TokioIo::new(upgraded);
    tunnel.write_all(b"hello over h2").await.unwrap();
    let mut echoed = [0u8; 13];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"HELLO OVER H2");

    // Close the client connection before rouse is stopped, so its drain has nothing to wait for.
    drop((tunnel, sender));
    connection.abort();
    let _ = connection.await;
}
