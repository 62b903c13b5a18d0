//! `demo`: builds the binaries, starts a server and a client on loopback (data under
//! `target/demo/`), enrolls the client, pushes one TCP rule to a small echo backend, sends
//! real bytes through it and prints what came back and what the counters say.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Children are stopped with SIGTERM (then killed) when the demo ends, however it ends.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("demo: {} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin(root: &Path, name: &str) -> PathBuf {
    root.join("target/debug").join(name)
}

fn output(root: &Path, program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).current_dir(root).output()?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out waiting for {what}")
}

/// Runs the demo; with `keep`, leaves everything running until Ctrl-C.
pub fn run(root: &Path, keep: bool) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run_cmd(root, &cargo, &["build", "--quiet", "--bins"])?;
    let dir = root.join("target/demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("server");
    let data_arg = data.to_str().context("data dir path is not UTF-8")?;
    let logs = |name: &str| std::fs::File::create(dir.join(name));

    println!("1. starting portunus-server (data dir {})", data.display());
    let server = Proc {
        name: "portunus-server",
        child: Command::new(bin(root, "portunus-server"))
            .args(["--data-dir", data_arg, "serve", "--control-listen", "127.0.0.1:0"])
            .args(["--operator-http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--stats-interval-secs", "1"])
            .stderr(logs("server.log")?)
            .spawn()?,
    };
    wait_for("server.addr", Duration::from_secs(20), || data.join("server.addr").exists())?;

    println!("2. enrolling client demo-edge");
    let enroll =
        output(root, &bin(root, "portunus-server"), &["--data-dir", data_arg, "enroll-client", "demo-edge"])?;
    println!("   {enroll}");
    let uri = enroll.split('\'').nth(1).context("enroll-client printed no URI")?;
    let bundle = dir.join("demo-edge.bundle.json");
    let bundle_arg = bundle.to_str().context("bundle path is not UTF-8")?;
    output(root, &bin(root, "portunus-client"), &["enroll", uri, "--bundle", bundle_arg])?;

    println!("3. starting portunus-client");
    let client = Proc {
        name: "portunus-client",
        child: Command::new(bin(root, "portunus-client"))
            .args(["--bundle", bundle_arg])
            .stderr(logs("client.log")?)
            .spawn()?,
    };
    let clients = || output(root, &bin(root, "portunus-server"), &["--data-dir", data_arg, "list-clients"]);
    wait_for("the client to connect", Duration::from_secs(20), || {
        clients().is_ok_and(|t| t.lines().any(|l| l.contains("demo-edge") && l.contains(" yes ")))
    })?;

    let backend = TcpListener::bind("127.0.0.1:0")?;
    let backend_addr = backend.local_addr()?;
    std::thread::spawn(move || {
        for stream in backend.incoming().flatten() {
            std::thread::spawn(move || echo(stream));
        }
    });
    let listen_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();

    println!("4. pushing rule: listen {listen_port} -> echo backend {backend_addr}");
    let rule_id = output(
        root,
        &bin(root, "portunus-server"),
        &[
            "--data-dir",
            data_arg,
            "push-rule",
            "demo-edge",
            &listen_port.to_string(),
            &backend_addr.to_string(),
        ],
    )?;
    println!("   rule {rule_id} is active");

    let message = b"hello through portunus\n";
    let mut conn = TcpStream::connect(("127.0.0.1", listen_port))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(message)?;
    let mut reply = String::new();
    BufReader::new(&conn).read_line(&mut reply)?;
    drop(conn);
    println!("5. sent {:?}, got back {:?}", String::from_utf8_lossy(message).trim(), reply.trim());
    if reply.as_bytes() != message {
        bail!("the echo did not match what was sent");
    }

    let server_cli = bin(root, "portunus-server");
    wait_for("traffic counters", Duration::from_secs(10), || {
        output(root, &server_cli, &["--data-dir", data_arg, "rule-stats", &rule_id]).is_ok_and(|t| {
            t.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.first() == Some(&"total") && cells.get(2).is_some_and(|out| *out != "0")
            })
        })
    })?;
    println!(
        "6. counters:\n{}",
        output(root, &server_cli, &["--data-dir", data_arg, "rule-stats", &rule_id])?
    );
    if keep {
        println!(
            "\nRunning: 127.0.0.1:{listen_port} forwards to {backend_addr}. Logs in {}. Ctrl-C to stop.",
            dir.display()
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    drop(client);
    drop(server);
    println!("demo: ok (logs in {})", dir.display());
    Ok(())
}

fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}
