//! TLS termination on `https` listeners, with real clients (curl, rustls) and certificates made
//! at test time: which certificate a name gets, ALPN, refusals, the SNI/Host check, starting the
//! backend at the ClientHello, bad clients, and reloading certificates on SIGHUP.

mod common;

use std::time::Duration;

use common::tls::*;
use common::*;
use rustls::AlertDescription;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn sni_picks_each_routes_certificate_with_ecdsa_and_rsa_keys() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let a_cert = ca.issue(&sb, "a", &["a.test"], Key::EcdsaSec1);
    let b_cert = ca.issue(&sb, "b", &["b.test"], Key::RsaPkcs1);
    let (a, b) = (EchoBackend::start().await, EchoBackend::start().await);
    let rouse = serve_https(
        &sb,
        None,
        &(tls_route("a", &["a.test"], a.addr, &a_cert)
            + &tls_route("b", &["b.test"], b.addr, &b_cert)),
    );

    // curl checks each certificate against the CA and the name.
    for (host, backend) in [("a.test", &a), ("b.test", &b)] {
        let got = curl(&ca, rouse.addr(), host, &[]).await;
        assert!(got.ok, "{host}: {got:?}");
        assert!(got.status.starts_with("200 "), "{host}: {got:?}");
        assert!(got.body.contains(&format!("host: {host}")), "{got:?}");
        assert_eq!(backend.heads().len(), 1, "{host}");
    }

    // The very certificate of each route, over TLS 1.3 and TLS 1.2.
    for tls12_only in [false, true] {
        for (host, cert) in [("a.test", &a_cert), ("b.test", &b_cert)] {
            let hello = Hello {
                tls12_only,
                ..Hello::sni(host)
            };
            let mut conn = handshake(rouse.addr(), hello).await.unwrap();
            assert_eq!(
                presented(&conn),
                cert.der,
                "{host}, tls12_only {tls12_only}"
            );
            let version = conn.get_ref().1.protocol_version().unwrap();
            assert_eq!(
                version == rustls::ProtocolVersion::TLSv1_2,
                tls12_only,
                "{version:?}"
            );
            let resp = request(&mut conn, host).await;
            assert_eq!(resp.status, 200, "{resp:?}");
        }
    }
}

#[tokio::test]
async fn alpn_offers_h2_and_http1_and_the_backend_sees_https() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let cert = ca.issue(&sb, "a", &["a.test"], Key::Ecdsa);
    let backend = EchoBackend::start().await;
    let rouse = serve_https(&sb, None, &tls_route("a", &["a.test"], backend.addr, &cert));

    let h2 = curl(&ca, rouse.addr(), "a.test", &["--http2"]).await;
    assert_eq!(h2.status, "200 2", "{h2:?}");
    let h1 = curl(&ca, rouse.addr(), "a.test", &["--http1.1"]).await;
    assert_eq!(h1.status, "200 1.1", "{h1:?}");
    let heads = backend.heads();
    assert_eq!(heads.len(), 2);
    for head in &heads {
        assert_eq!(
            head_header(head, "x-forwarded-proto").as_deref(),
            Some("https"),
            "{head}"
        );
    }

    for (offered, chosen) in [
        (&[b"h2" as &[u8], b"http/1.1"][..], Some(&b"h2"[..])),
        (&[b"http/1.1" as &[u8]][..], Some(&b"http/1.1"[..])),
        (&[][..], None),
    ] {
        let hello = Hello {
            alpn: offered,
            ..Hello::sni("a.test")
        };
        let conn = handshake(rouse.addr(), hello).await.unwrap();
        assert_eq!(alpn(&conn).as_deref(), chosen);
    }
}

#[tokio::test]
async fn no_sni_and_unknown_names_get_the_listener_default_certificate() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let default = ca.issue(&sb, "default", &["default.test"], Key::Ecdsa);
    let a_cert = ca.issue(&sb, "a", &["a.test"], Key::Ecdsa);
    let (a, other) = (EchoBackend::start().await, EchoBackend::start().await);
    // Route "plain" has no certificate of its own: its name gets the default.
    let rouse = serve_https(
        &sb,
        Some(&default),
        &(tls_route("a", &["a.test"], a.addr, &a_cert)
            + &none_route("plain", &["plain.test"], other.addr)),
    );

    for sni in [None, Some("unknown.test"), Some("plain.test")] {
        let hello = Hello {
            sni,
            ..Hello::sni("")
        };
        let mut conn = handshake(rouse.addr(), hello).await.unwrap();
        assert_eq!(presented(&conn), default.der, "sni {sni:?}");
        // The default certificate serves the names that get it, and only those.
        assert_eq!(request(&mut conn, "plain.test").await.status, 200);
        assert_eq!(request(&mut conn, "a.test").await.status, 421);
    }
    let conn = handshake(rouse.addr(), Hello::sni("a.test")).await.unwrap();
    assert_eq!(presented(&conn), a_cert.der);

    let plain = curl(&ca, rouse.addr(), "default.test", &[]).await;
    assert!(plain.status.starts_with("404 "), "{plain:?}");
}

#[tokio::test]
async fn without_a_default_an_unknown_name_or_no_sni_gets_an_alert() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let a_cert = ca.issue(&sb, "a", &["a.test"], Key::Ecdsa);
    let (a, other) = (EchoBackend::start().await, EchoBackend::start().await);
    let rouse = serve_https(
        &sb,
        None,
        &(tls_route("a", &["a.test"], a.addr, &a_cert)
            + &none_route("plain", &["plain.test"], other.addr)),
    );

    for (sni, expected) in [
        (Some("unknown.test"), AlertDescription::UnrecognisedName),
        (Some("plain.test"), AlertDescription::UnrecognisedName),
        (None, AlertDescription::HandshakeFailure),
    ] {
        let hello = Hello {
            sni,
            ..Hello::sni("")
        };
        let e = handshake(rouse.addr(), hello)
            .await
            .err()
            .unwrap_or_else(|| panic!("sni {sni:?}: handshake succeeded"));
        assert_eq!(alert(&e), Some(expected), "sni {sni:?}: {e}");
    }
    // curl says so too.
    let got = curl(&ca, rouse.addr(), "unknown.test", &[]).await;
    assert!(
        !got.ok && got.stderr.contains("unrecognized name"),
        "{got:?}"
    );
    // The known name still works.
    assert!(handshake(rouse.addr(), Hello::sni("a.test")).await.is_ok());
}

#[tokio::test]
async fn a_host_given_another_certificate_than_the_sni_is_421_and_a_shared_one_is_served() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let wild = ca.issue(&sb, "wild", &["*.example.test"], Key::Ecdsa);
    let www = ca.issue(&sb, "www", &["www.example.test"], Key::Ecdsa);
    let b_cert = ca.issue(&sb, "b", &["b.test"], Key::Ecdsa);
    let backend = EchoBackend::start().await;
    // "api" and "shop" share the wildcard certificate; "www" has its own and beats the wildcard.
    let rouse = serve_https(
        &sb,
        None,
        &(tls_route("api", &["*.example.test"], backend.addr, &wild)
            + &tls_route("shop", &["shop.example.test"], backend.addr, &wild)
            + &tls_route("www", &["www.example.test"], backend.addr, &www)
            + &tls_route("b", &["b.test"], backend.addr, &b_cert)),
    );

    let mut conn = handshake(rouse.addr(), Hello::sni("api.example.test"))
        .await
        .unwrap();
    assert_eq!(presented(&conn), wild.der);
    let conn_www = handshake(rouse.addr(), Hello::sni("www.example.test"))
        .await
        .unwrap();
    assert_eq!(presented(&conn_www), www.der);

    // Same certificate: coalescing is fine.
    assert_eq!(request(&mut conn, "api.example.test").await.status, 200);
    assert_eq!(request(&mut conn, "shop.example.test").await.status, 200);
    assert_eq!(request(&mut conn, "x.example.test").await.status, 200);
    // Another site's certificate: misdirected, and the connection stays usable.
    let resp = request(&mut conn, "www.example.test").await;
    assert_eq!(resp.status, 421, "{resp:?}");
    assert!(resp.body.contains("www.example.test"), "{resp:?}");
    assert_eq!(request(&mut conn, "b.test").await.status, 421);
    assert_eq!(request(&mut conn, "api.example.test").await.status, 200);

    // curl, with a Host that disagrees with the SNI.
    let got = curl(
        &ca,
        rouse.addr(),
        "b.test",
        &["-H", "Host: www.example.test"],
    )
    .await;
    assert!(got.status.starts_with("421 "), "{got:?}");
    // Nothing misdirected reached the backend.
    let heads = backend.heads();
    assert_eq!(heads.len(), 4, "{heads:#?}");
}

#[tokio::test]
async fn the_client_hello_starts_the_backend_before_any_request() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let cert = ca.issue(&sb, "a", &["a.test"], Key::Ecdsa);
    let port = free_port();
    let script = format!(
        "echo $$ >> {}; sleep 0.5; {}",
        sq(&sb.p("a.pids")),
        exec_static(port, "site a")
    );
    let rouse = serve_https(
        &sb,
        None,
        &exec_route("a", &["a.test"], port, &sh_cmd(&sb, &script), &cert.toml()),
    );

    let mut conn = handshake(rouse.addr(), Hello::sni("a.test")).await.unwrap();
    // No request sent: the handshake alone started the backend.
    let pid = wait_pid(&sb, "a.pids", Duration::from_secs(5)).await;
    assert!(alive(pid));
    let resp = request(&mut conn, "a.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "site a"),
        "{resp:?}"
    );
    assert_eq!(rouse.log_count(&["backend starting", "route=a"]), 1);
    assert_eq!(sb.read("a.pids").lines().count(), 1);
}

#[tokio::test]
async fn garbage_and_stalled_handshakes_cost_other_clients_nothing() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let cert = ca.issue(&sb, "a", &["a.test"], Key::Ecdsa);
    let backend = EchoBackend::start().await;
    let rouse = serve_https(
        &sb,
        None,
        &("[proxy]\nhandshake_timeout = \"1s\"\nworkers = 1\n\n".to_owned()
            + &tls_route("a", &["a.test"], backend.addr, &cert)),
    );

    // Plain HTTP where TLS is expected.
    let mut garbage = tokio::net::TcpStream::connect(rouse.addr()).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    // A record header announcing a ClientHello that never comes; and a client sending nothing.
    let mut stalled = tokio::net::TcpStream::connect(rouse.addr()).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(rouse.addr()).await.unwrap();

    // With one worker, all share a thread with the good client, which is served at once.
    for _ in 0..3 {
        let mut conn = handshake(rouse.addr(), Hello::sni("a.test")).await.unwrap();
        assert_eq!(request(&mut conn, "a.test").await.status, 200);
    }

    // Each bad client is closed: the garbage at once (after an alert), the others at the
    // handshake timeout.
    for (name, stream) in [
        ("garbage", &mut garbage),
        ("stalled", &mut stalled),
        ("silent", &mut silent),
    ] {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{name} connection still open after 5s");
        if name == "garbage" {
            assert_eq!(rest.first(), Some(&0x15), "an alert record: {rest:?}");
        }
    }
}

#[tokio::test]
async fn sighup_serves_a_replaced_certificate_to_new_connections_and_keeps_open_ones() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let old = ca.issue(&sb, "a", &["a.test"], Key::Ecdsa);
    let backend = EchoBackend::start().await;
    let rouse = serve_https(&sb, None, &tls_route("a", &["a.test"], backend.addr, &old));

    let mut open = handshake(rouse.addr(), Hello::sni("a.test")).await.unwrap();
    assert_eq!(presented(&open), old.der);
    assert_eq!(request(&mut open, "a.test").await.status, 200);

    // Renewed in place, as certbot does.
    let new = ca.issue(&sb, "a", &["a.test"], Key::RsaPkcs1);
    assert_ne!(new.der, old.der);
    rouse.signal(libc::SIGHUP);
    assert!(
        rouse
            .wait_log(
                &["certificates reloaded", "failed=0"],
                Duration::from_secs(5)
            )
            .await,
        "{}",
        rouse.log()
    );

    let mut fresh = handshake(rouse.addr(), Hello::sni("a.test")).await.unwrap();
    assert_eq!(presented(&fresh), new.der);
    assert_eq!(request(&mut fresh, "a.test").await.status, 200);
    // The connection made with the old certificate goes on.
    assert_eq!(request(&mut open, "a.test").await.status, 200);
    let got = curl(&ca, rouse.addr(), "a.test", &[]).await;
    assert!(got.status.starts_with("200 "), "{got:?}");
}

#[tokio::test]
async fn sighup_with_a_broken_certificate_keeps_the_one_in_use() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let cert = ca.issue(&sb, "a", &["a.test"], Key::Ecdsa);
    let backend = EchoBackend::start().await;
    let rouse = serve_https(&sb, None, &tls_route("a", &["a.test"], backend.addr, &cert));
    let mut open = handshake(rouse.addr(), Hello::sni("a.test")).await.unwrap();

    // Half-written certificate; then a key from another certificate.
    sb.write("a.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    rouse.signal(libc::SIGHUP);
    assert!(
        rouse
            .wait_log(
                &["certificates reloaded", "failed=1"],
                Duration::from_secs(5)
            )
            .await,
        "{}",
        rouse.log()
    );
    // A certificate with a key that is not its own.
    let other = ca.issue(&sb, "other", &["a.test"], Key::Ecdsa);
    let unrelated = ca.issue(&sb, "unrelated", &["a.test"], Key::Ecdsa);
    std::fs::copy(&other.cert, &cert.cert).unwrap();
    std::fs::copy(&unrelated.key, &cert.key).unwrap();
    rouse.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || rouse
            .log_count(&["certificates reloaded", "failed=1"])
            == 2)
        .await,
        "{}",
        rouse.log()
    );
    let log = rouse.log();
    assert!(
        log.contains("certificate not reloaded") && log.contains(&sb.p("a.crt")),
        "{log}"
    );
    assert!(log.contains("does not match"), "{log}");

    let mut fresh = handshake(rouse.addr(), Hello::sni("a.test")).await.unwrap();
    assert_eq!(presented(&fresh), cert.der);
    assert_eq!(request(&mut fresh, "a.test").await.status, 200);
    assert_eq!(request(&mut open, "a.test").await.status, 200);
}

#[tokio::test]
async fn a_reload_adds_a_site_with_its_certificate_and_refuses_one_whose_certificate_is_missing() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let a = ca.issue(&sb, "a", &["a.test"], Key::Ecdsa);
    let b = ca.issue(&sb, "b", &["b.test"], Key::Ecdsa);
    let backend = EchoBackend::start().await;
    let site_a = tls_route("a", &["a.test"], backend.addr, &a);
    let rouse = serve_https(&sb, None, &site_a);
    let mut open = handshake(rouse.addr(), Hello::sni("a.test")).await.unwrap();
    assert_eq!(request(&mut open, "a.test").await.status, 200);
    // No certificate for b.test yet: an alert.
    assert!(handshake(rouse.addr(), Hello::sni("b.test")).await.is_err());

    let rewrite = |body: String| sb.write("rouse.toml", &(https_listener(None) + &body));
    rewrite(site_a.clone() + &tls_route("b", &["b.test"], backend.addr, &b));
    rouse.signal(libc::SIGHUP);
    assert!(
        rouse
            .wait_log(&["config reloaded", "added: b"], Duration::from_secs(5))
            .await,
        "{}",
        rouse.log()
    );
    let mut fresh = handshake(rouse.addr(), Hello::sni("b.test")).await.unwrap();
    assert_eq!(presented(&fresh), b.der);
    assert_eq!(request(&mut fresh, "b.test").await.status, 200);
    // The connection made before the reload goes on, still only for its own site.
    assert_eq!(request(&mut open, "a.test").await.status, 200);
    assert_eq!(request(&mut open, "b.test").await.status, 421);

    // A third site whose certificate file does not exist: the whole reload is refused.
    let missing = Cert {
        cert: sb.path("c-missing.crt"),
        key: b.key.clone(),
        der: b.der.clone(),
    };
    rewrite(
        site_a
            + &tls_route("b", &["b.test"], backend.addr, &b)
            + &tls_route("c", &["c.test"], backend.addr, &missing),
    );
    rouse.signal(libc::SIGHUP);
    assert!(
        rouse
            .wait_log(
                &["config not reloaded", &sb.p("c-missing.crt")],
                Duration::from_secs(5)
            )
            .await,
        "{}",
        rouse.log()
    );
    assert!(handshake(rouse.addr(), Hello::sni("c.test")).await.is_err());
    let mut again = handshake(rouse.addr(), Hello::sni("b.test")).await.unwrap();
    assert_eq!(request(&mut again, "b.test").await.status, 200);
}

#[tokio::test]
async fn check_and_serve_refuse_a_missing_or_mismatched_certificate() {
    let sb = Sandbox::new();
    let ca = Ca::new(&sb);
    let a = ca.issue(&sb, "a", &["a.test"], Key::Ecdsa);
    let b = ca.issue(&sb, "b", &["b.test"], Key::Ecdsa);
    let backend = EchoBackend::start().await;
    let missing = Cert {
        cert: sb.path("missing.crt"),
        key: a.key.clone(),
        der: a.der.clone(),
    };
    let config = sb.write(
        "missing.toml",
        &(https_listener(None) + &tls_route("site", &["a.test"], backend.addr, &missing)),
    );
    let (status, stdout, stderr) = run_rouse(&["check", "-c", config.to_str().unwrap()]);
    assert!(!status.success(), "{stdout}");
    assert!(
        stderr.contains(&sb.p("missing.crt")) && stderr.contains("route \"site\""),
        "{stderr}"
    );

    // A key that is not the certificate's, on the listener: `serve` does not start.
    let mismatched = Cert {
        cert: a.cert.clone(),
        key: b.key.clone(),
        der: a.der.clone(),
    };
    let mut rouse = serve_https(
        &sb,
        Some(&mismatched),
        &none_route("site", &["a.test"], backend.addr),
    );
    let exit = rouse.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|s| !s.success()), "{exit:?}");
    let log = rouse.log();
    assert!(
        log.contains("listener \"http\"")
            && log.contains("does not match")
            && log.contains(&sb.p("b.key")),
        "{log}"
    );
    // And `check` says the same.
    let (status, _, stderr) = run_rouse(&["check", "-c", sb.p("rouse.toml").as_str()]);
    assert!(
        !status.success() && stderr.contains("does not match"),
        "{stderr}"
    );
}
