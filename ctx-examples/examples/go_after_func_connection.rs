//! Go's `ExampleAfterFunc_connection`: a blocking socket read that stops when a context ends.
//!
//! A read on a socket blocks until data comes, and a peer that never sends would hold the
//! request's thread forever. `after_func` interrupts it when the context ends. Go moves the
//! connection's read deadline to now; std cannot change the deadline of a read already in
//! progress, so the after-func shuts the read half down instead, which wakes the read at
//! once. (With tokio, `ctx.run(conn.read(&mut buf))` drops the read and keeps the
//! connection usable.)

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use ctx_core::{Context, Error};

/// Reads from `conn` until data comes or `ctx` ends; a context error comes back as an
/// `io::Error` (`TimedOut` for a deadline) wrapping the `ctx_core::Error`.
fn read_from_conn(ctx: &Context, conn: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let closer = conn.try_clone()?;
    let (stopped_tx, stopped_rx) = mpsc::channel();
    let stop = ctx.after_func(move || {
        let _ = closer.shutdown(Shutdown::Read); // wakes the blocked read below
        let _ = stopped_tx.send(());
    });
    let read = (&*conn).read(buf);
    if !stop.stop() {
        // The after-func started: wait for it to finish, and report why.
        let _ = stopped_rx.recv();
        let err = ctx
            .err()
            .expect("the after-func runs only once ctx is done");
        return Err(err.into());
    }
    read
}

fn main() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let conn = TcpStream::connect(listener.local_addr()?)?;
    let (mut peer, _) = listener.accept()?;
    let mut buf = [0; 1024];

    // Data in time: the read returns it and the after-func never runs.
    peer.write_all(b"hello")?;
    let ctx = Context::background().with_timeout(Duration::from_secs(10));
    let n = read_from_conn(&ctx, &conn, &mut buf)?;
    println!("read {:?}", String::from_utf8_lossy(&buf[..n]));
    assert_eq!(&buf[..n], b"hello");

    // A peer that says nothing: the timeout ends the read.
    let ctx = Context::background().with_timeout(Duration::from_millis(20));
    let err = read_from_conn(&ctx, &conn, &mut buf).unwrap_err();
    println!("{err}");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert_eq!(inner, Some(&Error::DeadlineExceeded));
    Ok(())
}
