//! The demo's graceful shutdown (`signal::graceful`): with `--serve`, SIGINT stops the
//! server accepting, and a request in flight still gets its answer before the demo exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Far beyond anything a loaded machine needs.
const PATIENCE: Duration = Duration::from_secs(30);

/// One HTTP/1.1 request on its own connection; the whole response.
fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\ngrpc-timeout: 20S\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// Kills the demo if the test fails before it exits.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigint_lets_the_request_in_flight_finish() {
    let child = Command::new(env!("CARGO_BIN_EXE_ctx-examples"))
        .args(["--serve", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let mut demo = Demo(child);
    let mut lines = BufReader::new(demo.0.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the demo said where it serves")
            .unwrap();
        if let Some(rest) = line.strip_prefix("serving on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };

    // A `/command` request (250 ms of work) whose handler is running: the live context tree
    // shows its deadline context next to the one of the request that asks. Should it end
    // before that is seen, try again.
    let in_flight = 'attempt: {
        for _ in 0..10 {
            let (sent, answer) = mpsc::channel();
            let at = addr.clone();
            std::thread::spawn(move || sent.send(get(&at, "/command")));
            let until = Instant::now() + PATIENCE;
            while Instant::now() < until {
                let tree = get(&addr, "/debug/contexts").unwrap();
                if tree.matches("WithDeadline").count() >= 2 {
                    break 'attempt answer;
                }
                if answer.try_recv().is_ok() {
                    break; // it ended before it was seen: again
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        panic!("never saw a /command request in flight");
    };

    let status = Command::new("kill")
        .args(["-INT", &demo.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let response = in_flight
        .recv_timeout(PATIENCE)
        .expect("the request in flight was answered")
        .expect("the request in flight was not cut");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("command: slept 250ms"), "{response}");

    let (sent, rest) = mpsc::channel();
    std::thread::spawn(move || sent.send(lines.map_while(Result::ok).collect::<Vec<_>>()));
    let rest = rest
        .recv_timeout(PATIENCE)
        .expect("the demo exits once its requests are answered");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("received SIGINT: shutting down")),
        "{rest:?}"
    );
    assert!(
        demo.0.wait().unwrap().success(),
        "the demo exits 0: {rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("0 handlers left running")),
        "{rest:?}"
    );
}
