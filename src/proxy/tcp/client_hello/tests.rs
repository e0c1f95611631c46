use std::sync::Arc;

use super::*;

/// The first flight of a real rustls client asking for `name`.
fn real_hello(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// The handshake message of a single-record flight, re-cut into records of `size` bytes.
fn refragment(flight: &[u8], size: usize) -> Vec<u8> {
    let message = &flight[RECORD_HEADER..];
    let mut out = Vec::new();
    for chunk in message.chunks(size) {
        out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// A minimal ClientHello with `extensions` (their list, without its length) in one record.
fn hello_with(extensions: &[u8]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(extensions);
    let mut message = vec![HANDSHAKE_CLIENT_HELLO];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    let mut record = vec![CONTENT_HANDSHAKE, 3, 1];
    record.extend_from_slice(&(message.len() as u16).to_be_bytes());
    record.extend_from_slice(&message);
    record
}

fn sni_extension(name: &[u8]) -> Vec<u8> {
    let mut list = vec![NAME_TYPE_HOST_NAME];
    list.extend_from_slice(&(name.len() as u16).to_be_bytes());
    list.extend_from_slice(name);
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    let mut ext = EXTENSION_SERVER_NAME.to_be_bytes().to_vec();
    ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
    ext.extend_from_slice(&data);
    ext
}

fn complete(name: &str) -> Result<Parsed, ClientHelloError> {
    Ok(Parsed::Complete(Some(name.to_string())))
}

#[test]
fn real_client_hello_gives_its_server_name() {
    assert_eq!(
        parse(&real_hello("app.example.com")),
        complete("app.example.com")
    );
}

#[test]
fn every_prefix_of_a_client_hello_is_incomplete() {
    let hello = real_hello("app.example.com");
    for end in 0..hello.len() {
        assert_eq!(
            parse(&hello[..end]),
            Ok(Parsed::Incomplete),
            "prefix of {end} bytes"
        );
    }
}

#[test]
fn client_hello_split_across_records_is_reassembled() {
    let hello = real_hello("split.example.com");
    let smallest = (hello.len() - RECORD_HEADER).div_ceil(MAX_RECORDS);
    for size in [smallest, 100, 511] {
        let split = refragment(&hello, size);
        assert_eq!(
            parse(&split),
            complete("split.example.com"),
            "records of {size} bytes"
        );
    }
}

#[test]
fn too_many_records_are_refused() {
    let split = refragment(&real_hello("a.example.com"), 1);
    assert_eq!(
        parse(&split),
        Err(ClientHelloError::Malformed("split into too many records"))
    );
}

#[test]
fn bytes_after_the_client_hello_are_ignored() {
    let mut flight = real_hello("app.example.com");
    flight.extend_from_slice(&[20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 5, 1, 2]);
    assert_eq!(parse(&flight), complete("app.example.com"));
}

#[test]
fn client_hello_without_server_name_has_none() {
    assert_eq!(
        parse(&hello_with(&[0xff, 0x01, 0, 1, 0])),
        Ok(Parsed::Complete(None))
    );
    // No extensions at all: the list is absent, not empty.
    let mut bare = hello_with(&[]);
    bare.truncate(bare.len() - 2);
    let fix = |b: &mut Vec<u8>, at: usize, by: usize| {
        let n = u16::from_be_bytes([b[at], b[at + 1]]) as usize - by;
        b[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
    };
    fix(&mut bare, 3, 2);
    fix(&mut bare, 7, 2);
    assert_eq!(parse(&bare), Ok(Parsed::Complete(None)));
}

#[test]
fn built_client_hello_gives_its_server_name() {
    assert_eq!(
        parse(&hello_with(&sni_extension(b"db.internal"))),
        complete("db.internal")
    );
}

#[test]
fn garbage_is_refused_at_once() {
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\n"),
        Err(ClientHelloError::NotHandshake(b'G'))
    );
    assert_eq!(parse(&[22, 9, 9, 0, 10]), Err(ClientHelloError::BadRecord));
    assert_eq!(parse(&[22, 3, 1, 0, 0]), Err(ClientHelloError::BadRecord));
    assert_eq!(
        parse(&[22, 3, 1, 0x40, 1]),
        Err(ClientHelloError::BadRecord)
    );
    // A ServerHello (type 2) where a ClientHello belongs.
    assert_eq!(
        parse(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
        Err(ClientHelloError::NotClientHello(2))
    );
    // Announces 16 MiB.
    assert_eq!(
        parse(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
        Err(ClientHelloError::TooLarge(0xff_ffff))
    );
}

#[test]
fn bad_server_names_are_refused() {
    for name in [&b""[..], b"a\0b", b"caf\xc3\xa9.example", b"a b"] {
        assert!(
            matches!(
                parse(&hello_with(&sni_extension(name))),
                Err(ClientHelloError::Malformed(_))
            ),
            "{name:?}"
        );
    }
    let mut twice = sni_extension(b"a.example");
    twice.extend_from_slice(&sni_extension(b"b.example"));
    assert_eq!(
        parse(&hello_with(&twice)),
        Err(ClientHelloError::Malformed("two server_name extensions"))
    );
}

#[test]
fn lengths_that_overrun_are_refused_not_panicked_on() {
    let hello = real_hello("app.example.com");
    // Corrupt every byte of the handshake body in turn, both ways: parse must return, whatever
    // it decides.
    for at in RECORD_HEADER + HANDSHAKE_HEADER..hello.len() {
        for value in [0x00, 0xff] {
            let mut bad = hello.clone();
            bad[at] = value;
            let _ = parse(&bad);
        }
    }
    // An extension whose length runs past the list.
    let mut ext = sni_extension(b"a.example");
    ext[3] += 1;
    assert!(matches!(
        parse(&hello_with(&ext)),
        Err(ClientHelloError::Malformed(_))
    ));
}
