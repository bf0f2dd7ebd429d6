//! The reference reverse proxy: nginx from Debian, one process (`master_process off`, so its CPU time is
//! one `/proc` entry), keep-alive to the fixture, no buffering (SSE), no access log.

use std::net::SocketAddr;
use std::path::Path;

/// nginx.conf proxying `/mcp/{bench,bench-sse}` to the fixture's `/mcp` and `/mcp-sse`.
pub fn config(listen: SocketAddr, fixture: SocketAddr, run_dir: &Path, max_files: u64) -> String {
    let dir = run_dir.display();
    let connections = max_files.saturating_sub(64).max(1024);
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {max_files};
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-tmp/client;
    proxy_temp_path {dir}/nginx-tmp/proxy;
    fastcgi_temp_path {dir}/nginx-tmp/fastcgi;
    uwsgi_temp_path {dir}/nginx-tmp/uwsgi;
    scgi_temp_path {dir}/nginx-tmp/scgi;
    keepalive_requests 1000000;
    upstream fixture {{
        server {fixture};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        location = /mcp/bench {{
            proxy_pass http://fixture/mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
        location = /mcp/bench-sse {{
            proxy_pass http://fixture/mcp-sse;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
    }}
}}
"#
    )
}
