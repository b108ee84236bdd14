//! nginx, the server of every setup: one per node (`ip netns exec herd-sN
//! nginx`, our child with `daemon off`), `master_process on` with one
//! worker; `/` returns the node's name, `/bulk` sends the bulk file with
//! `sendfile`, `PUT /upload/bulk` receives it (DAV, into the node's
//! directory in the state dir).

use super::clients::client;
use super::state::STATE_DIR;
use crate::bench_fastpath::Guard;
use crate::lab::{node_ip4, node_name, node_ns};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// nginx on each of the nodes 1 to `nodes` (on CPU 0 if `pin`), once all
/// answer; dropping a guard stops its nginx (SIGTERM, SIGKILL after 10 s).
pub(super) fn start(dir: &Path, nodes: u32, pin: bool) -> Result<Vec<Guard>> {
    let mut servers = Vec::new();
    for n in 1..=nodes {
        servers.push(start_nginx(dir, n, pin)?);
    }
    for n in 1..=nodes {
        wait_nginx(n, &mut servers[n as usize - 1])?;
    }
    Ok(servers)
}

/// nginx's version, as `nginx -v` prints it.
pub(super) fn version() -> String {
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .trim_start_matches("nginx version: ")
                .to_string()
        })
        .unwrap_or_default()
}

/// nginx's configuration for node `name`, its files in `dir`, the bulk
/// file in `root`.
fn nginx_conf(name: &str, dir: &Path, root: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# herd-bench serve, node {name}
daemon off;
# Workers as root: a PUT writes into the bench's directory.
user root;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    default_type text/plain;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 80;
        listen [::]:80;
        root {root};
        location = / {{
            return 200 "{name}\n";
        }}
        location = /bulk {{
        }}
        location /upload/ {{
            root {d};
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
            client_body_buffer_size 1m;
        }}
    }}
}}
"#,
        root = root.display()
    )
}

/// Starts nginx in node `n`'s namespace as our child (`daemon off`): the
/// guard stops it (SIGTERM: nginx's fast shutdown).
fn start_nginx(dir: &Path, n: u32, pin: bool) -> Result<Guard> {
    let node_dir = dir.join(node_name(n));
    std::fs::create_dir_all(&node_dir)?;
    let conf = node_dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&node_name(n), &node_dir, dir))?;
    let log = std::fs::File::create(node_dir.join("nginx.out"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node_ns(n)]);
    if pin {
        cmd.args(["taskset", "-c", "0"]);
    }
    let child = cmd
        .arg("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(node_dir.join("error.log"))
        .arg("-p")
        .arg(&node_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting nginx")?;
    Ok(Guard(child))
}

/// Waits until node `n`'s nginx answers on the node's own address.
fn wait_nginx(n: u32, server: &mut Guard) -> Result<()> {
    let url = format!("http://{}/", node_ip4(n));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(body) = client(false, &["curl", "-s", "-m", "1", &url], 5) {
            if body.trim() == node_name(n) {
                return Ok(());
            }
        }
        if let Some(code) = server.0.try_wait()? {
            let log =
                std::fs::read_to_string(Path::new(STATE_DIR).join(node_name(n)).join("error.log"))
                    .unwrap_or_default();
            bail!("nginx on {} exited ({code}): {}", node_name(n), log.trim());
        }
        if Instant::now() > deadline {
            bail!(
                "nginx on {} did not answer at {url} within 10 s",
                node_name(n)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_config() {
        let c = nginx_conf(
            "s2",
            Path::new("/run/herd-bench-serve/s2"),
            Path::new("/run/herd-bench-serve"),
        );
        for line in [
            "daemon off;",
            "master_process on;",
            "worker_processes 1;",
            "pid /run/herd-bench-serve/s2/nginx.pid;",
            "error_log /run/herd-bench-serve/s2/error.log;",
            "access_log off;",
            "sendfile on;",
            "keepalive_requests 1000000;",
            "listen 80;",
            "root /run/herd-bench-serve;",
            "return 200 \"s2\\n\";",
            "location = /bulk {",
            "user root;",
            "dav_methods PUT;",
        ] {
            assert!(c.contains(line), "{line} missing from\n{c}");
        }
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }
}
