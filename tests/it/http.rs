//! A cache served over HTTP by a real nginx (Debian's `nginx-light`, which
//! scripts/test installs): a fresh store substitutes every path from
//! `http://127.0.0.1:PORT` without building anything.
//!
//! nginx runs as a child of the test, in the foreground (`daemon off;`), with
//! its configuration, pid file, logs and temporary files in a directory of
//! its own, on a free port of the loopback interface; it is killed when the
//! test ends, however it ends.

use std::fs;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::build::build_into;
use crate::common::*;
use crate::e2e::{assert_store_holds_fixture, substitute_fixture_from};

const NGINX: &str = "/usr/sbin/nginx";

/// An nginx serving one directory; killed when dropped.
pub(crate) struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub(crate) fn serve(root: &Path) -> Nginx {
        assert!(
            Path::new(NGINX).is_file(),
            "the HTTP test needs nginx: apt-get install -y nginx-light (scripts/test does)"
        );
        let dir = tempdir();
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        fs::write(&conf, config(dir.path(), root, port)).unwrap();
        let log = dir.path().join("error.log");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {NGINX}: {e}"));
        let mut nginx = Nginx { child, port, dir };
        nginx.wait_until_listening();
        nginx
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "nginx exited with {status}:\n{}",
                    fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nginx did not start listening");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The body of `GET path`, which must answer 200.
    pub(crate) fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 "), "GET {path}: {head}");
        body.to_owned()
    }

    /// The request lines nginx has logged: `GET /nix-cache-info`, …
    pub(crate) fn requests(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration that touches nothing outside `dir` but the served `root`.
fn config(dir: &Path, root: &Path, port: u16) -> String {
    let d = dir.display();
    let temp = |name: &str| -> PathBuf { dir.join(name) };
    format!(
        r#"daemon off;
# One process, which runs as the test does (so it can read the private
# temporary directory), and which killing the child stops.
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {body};
    proxy_temp_path {proxy};
    default_type application/octet-stream;
    types {{ text/x-nix-narinfo narinfo; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"#,
        body = temp("body").display(),
        proxy = temp("proxy").display(),
        root = root.display(),
    )
}

#[test]
fn a_fresh_store_substitutes_every_path_from_the_cache_over_http() {
    let cache = tempdir();
    run(&mut build_into(cache.path(), &fixture().roots));
    let nginx = Nginx::serve(cache.path());

    let store = substitute_fixture_from(&nginx.url());
    assert_store_holds_fixture(store.path());

    // Every path a derivation made came over HTTP (busybox and note.txt
    // are made again by evaluation, in the fresh store).
    let requests = nginx.requests();
    let fetched = |url: &str| {
        requests
            .iter()
            .any(|r| r.contains(&format!("\"GET {url} ")) && r.contains("\" 200 "))
    };
    assert!(fetched("/nix-cache-info"), "{requests:#?}");
    for path in &fixture().closure {
        if path.ends_with("-busybox") || path.ends_with("-note.txt") {
            continue;
        }
        let url = format!("/{}", narinfo_of(cache.path(), path)["URL"]);
        assert!(
            fetched(&url),
            "{path} ({url}) was not fetched: {requests:#?}"
        );
    }
}
