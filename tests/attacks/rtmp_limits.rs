//! RTMP and RTSP connections nobody has authorised yet: what one may make livelens hold (hole 1:
//! a 16 MiB message announced and sent but for its last chunk) and how many one address may
//! keep open (hole 3: idle sockets in every RTSP and RTMP slot).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};

use super::common::{self, Server};

const CONFIG: &str = "[rtsp]\nlisten = \"127.0.0.1:0\"\n[rtmp]\nlisten = \"127.0.0.1:0\"\n\n\
                      [[camera]]\nid = \"pub\"\nsource = \"publish:\"\n\n\
                      [[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\n";

/// The server and its RTMP and RTSP ports.
fn start(name: &str) -> (Server, u16, u16) {
    livelens::api::raise_open_file_limit();
    let path = common::write_config(name, CONFIG);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(15));
    let outputs = server.get_json("/api/outputs");
    let port = |what: &str| outputs[what]["port"].as_u64().expect("a port") as u16;
    (server, port("rtmp"), port("rtsp"))
}

/// A blocking connection to 127.0.0.1:`port` from `source` (another loopback address).
fn connect_from(runtime: &tokio::runtime::Runtime, source: &str, port: u16) -> TcpStream {
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .unwrap_or_else(|e| panic!("connect from {source}: {e}"));
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

/// The client side of the RTMP handshake; an error once the server closes or refuses.
fn handshake(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut handshake = Handshake::new(PeerType::Client);
    stream.write_all(&handshake.generate_outbound_p0_and_p1().unwrap())?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        match handshake.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes)?
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                return stream.write_all(&response_bytes)
            }
        }
    }
}

/// Whether the server closes `stream` by `deadline` (what it sent before is read and
/// dropped).
fn closed_by_server(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Hole 1: after the handshake, before any command, a connection announces a 16 MiB message
/// (chunk size 64 KiB) and sends all of it but the last chunk. Unfixed, livelens held each
/// such message whole until the 10 s start limit.
#[test]
fn a_half_sent_huge_message_before_publishing_costs_nothing() {
    let full = super::full_scale();
    let connections: usize = if full { 1_000 } else { 100 };
    let allowed_mib: u64 = if full { 100 } else { 30 };
    const CHUNK: usize = 64 << 10;
    const ANNOUNCED: usize = (16 << 20) - 1; // the largest length a chunk header can carry
    let (server, port, _) = start("attacks-rtmp-half-sent");
    let pid = server.pid();
    let baseline = common::rss_kib(pid);

    // The peak, sampled while the flood runs.
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(common::rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut message = Vec::new();
    // SetChunkSize 64 KiB (chunk stream 2), then the big command's header (chunk stream 3).
    message.extend([0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]);
    message.extend((CHUNK as u32).to_be_bytes());
    let length = (ANNOUNCED as u32).to_be_bytes();
    message.extend([
        0x03, 0, 0, 0, length[1], length[2], length[3], 20, 0, 0, 0, 0,
    ]);
    let message = Arc::new(message);
    let started = Instant::now();
    // Four senders; at most 100 connections from each loopback address (below any per-address
    // limit: this is about memory).
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let message = message.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .unwrap();
                let payload = vec![0x55u8; CHUNK];
                let mut held = Vec::new();
                let mut refused = 0;
                for i in (t..connections).step_by(4) {
                    let source = format!("127.0.1.{}", 1 + i / 100);
                    let mut stream = connect_from(&runtime, &source, port);
                    let sent = handshake(&mut stream).and_then(|()| {
                        stream.write_all(&message)?;
                        for chunk in 0..ANNOUNCED / CHUNK {
                            if chunk > 0 {
                                stream.write_all(&[0xc3])?;
                            }
                            stream.write_all(&payload)?;
                        }
                        Ok(())
                    });
                    if sent.is_err() {
                        refused += 1;
                    }
                    held.push(stream);
                }
                (held, refused)
            })
        })
        .collect();
    let mut streams = Vec::new();
    let mut refused_while_sending = 0;
    for sender in senders {
        let (held, refused) = sender.join().unwrap();
        streams.extend(held);
        refused_while_sending += refused;
    }
    let sent_in = started.elapsed();
    // What the server holds now that every connection has sent what it will.
    let holding = common::rss_kib(pid);
    peak.fetch_max(holding, Ordering::Relaxed);
    // Closed within a second of the flood, long before the 10 s start limit.
    let deadline = Instant::now() + Duration::from_secs(1);
    let closed = streams
        .iter_mut()
        .map(|s| closed_by_server(s, deadline))
        .filter(|&c| c)
        .count();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let growth = (peak.load(Ordering::Relaxed).saturating_sub(baseline)) >> 10;
    eprintln!(
        "RTMP: {connections} connections announcing {ANNOUNCED} bytes, sent in {sent_in:?}: \
         RSS {} MiB → peak +{growth} MiB (+{} MiB once sent); {refused_while_sending} cut off \
         while sending, {closed} closed by the server within 1 s after",
        baseline >> 10,
        holding.saturating_sub(baseline) >> 10,
    );
    assert!(
        sent_in < Duration::from_secs(8),
        "the flood must be sent well within the 10 s start limit to measure anything: {sent_in:?}"
    );
    assert!(
        growth <= allowed_mib,
        "{connections} half-sent messages grew RSS by {growth} MiB (at most {allowed_mib})"
    );
    // Refused at the header: each connection closed, not kept until the start limit.
    assert_eq!(closed, connections, "connections the server did not close");
    drop(streams);
    common::wait_until(Duration::from_secs(5), "no RTMP connection left", || {
        server.resources()["rtmp_connections"] == 0
    });

    // The most a connection may still make livelens hold before publishing: a 16 KiB command
    // sent but for its last byte, which is allowed and kept until the start limit.
    let before = common::rss_kib(pid);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let mut message = Vec::new();
    message.extend([0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]);
    message.extend((CHUNK as u32).to_be_bytes());
    message.extend([0x03, 0, 0, 0, 0, 0x40, 0, 20, 0, 0, 0, 0]);
    message.extend(vec![0x55u8; (16 << 10) - 1]);
    let mut kept = Vec::new();
    for i in 0..connections {
        let mut stream = connect_from(&runtime, &format!("127.0.1.{}", 1 + i / 100), port);
        handshake(&mut stream).unwrap();
        stream.write_all(&message).unwrap();
        kept.push(stream);
    }
    common::wait_until(Duration::from_secs(5), "every connection counted", || {
        server.resources()["rtmp_connections"] == connections as u64
    });
    let per_connection = common::rss_kib(pid).saturating_sub(before) / connections as u64;
    eprintln!("RTMP: {connections} connections each holding an allowed 16 KiB command but its last byte: +{per_connection} KiB each");
    assert!(
        per_connection <= 64,
        "{per_connection} KiB held per connection before publishing (at most 64)"
    );
}

/// A raw DESCRIBE of camera `cam` over `stream`: the status line.
fn describe(stream: &mut TcpStream, port: u16) -> std::io::Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "DESCRIBE rtsp://127.0.0.1:{port}/cam RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    )?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Handshake, `connect` and `publish` to camera `pub` over `stream`: Ok once the publish is
/// accepted.
fn rtmp_publish(stream: &mut TcpStream) -> std::io::Result<()> {
    handshake(stream)?;
    let (mut session, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let mut outbound = initial;
    outbound.push(session.request_connection("live".into()).unwrap());
    let mut buf = [0u8; 16 * 1024];
    let mut connected = false;
    loop {
        for result in outbound.drain(..) {
            match result {
                ClientSessionResult::OutboundResponse(p) => stream.write_all(&p.bytes)?,
                ClientSessionResult::RaisedEvent(ClientSessionEvent::PublishRequestAccepted) => {
                    return Ok(())
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted)
                    if !connected =>
                {
                    connected = true;
                    let p = session
                        .request_publishing("pub".into(), PublishRequestType::Live)
                        .unwrap();
                    if let ClientSessionResult::OutboundResponse(p) = p {
                        stream.write_all(&p.bytes)?;
                    }
                }
                _ => {}
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        outbound = session
            .handle_input(&buf[..n])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
}

/// Hole 3: one address opens idle sockets to every RTSP (4,096) and RTMP (1,024) slot and more;
/// a client from another address must still read (RTSP) and publish (RTMP), and the idle
/// sockets must go at the first-request deadline.
#[test]
fn one_address_cannot_take_every_rtsp_and_rtmp_slot() {
    const RTSP_FLOOD: usize = 4_096 + 100;
    const RTMP_FLOOD: usize = 1_024 + 100;
    /// What one address may hold of each (the servers' MAX_CONNECTIONS_PER_ADDRESS).
    const PER_ADDRESS: usize = 128;
    let (server, rtmp_port, rtsp_port) = start("attacks-rtmp-per-address");
    let started = Instant::now();
    let mut flood = Vec::new();
    for (port, count) in [(rtsp_port, RTSP_FLOOD), (rtmp_port, RTMP_FLOOD)] {
        for _ in 0..count {
            flood.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
        }
    }
    // The flood holds what it can get.
    let counts = || {
        let r = server.resources();
        (
            r["rtsp_connections"].as_u64().unwrap(),
            r["rtmp_connections"].as_u64().unwrap(),
        )
    };
    // At least as many as any per-address limit: the clients below queue behind the rest.
    common::wait_until(Duration::from_secs(5), "the flood accepted", || {
        let now = counts();
        now.0 >= PER_ADDRESS as u64 && now.1 >= PER_ADDRESS as u64
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let mut reader = connect_from(&runtime, "127.0.0.2", rtsp_port);
    let described = describe(&mut reader, rtsp_port);
    let mut publisher = connect_from(&runtime, "127.0.0.2", rtmp_port);
    let published = rtmp_publish(&mut publisher);
    eprintln!("from 127.0.0.2: DESCRIBE → {described:?}; RTMP publish → {published:?}");
    assert_eq!(
        described.as_deref().ok(),
        Some("RTSP/1.0 200 OK"),
        "an RTSP client from another address while one address floods"
    );
    assert!(
        published.is_ok(),
        "an RTMP publisher from another address while one address floods: {published:?}"
    );
    common::wait_until(Duration::from_secs(5), "the publisher counted", || {
        server.resources()["publishers"]["rtmp"] == 1
    });
    // Each count includes one client from 127.0.0.2.
    let held = counts();
    eprintln!(
        "flood of {RTSP_FLOOD} RTSP and {RTMP_FLOOD} RTMP sockets from 127.0.0.1: the server \
         holds {} RTSP and {} RTMP connections {:?} after it started",
        held.0,
        held.1,
        started.elapsed()
    );
    assert!(
        held.0 <= PER_ADDRESS as u64 + 1 && held.1 <= PER_ADDRESS as u64 + 1,
        "one address holds {held:?} (RTSP, RTMP) connections"
    );

    // The flood's idle sockets go at the first-request deadline, the flooder's side still open.
    drop((reader, publisher));
    common::wait_until(
        Duration::from_secs(20),
        "the idle sockets dropped by the server",
        || counts() == (0, 0),
    );
    eprintln!(
        "idle sockets all gone {:?} after the flood",
        started.elapsed()
    );
    drop(flood);
}
