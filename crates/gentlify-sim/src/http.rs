//! The simulated API served over HTTP/1.1 on loopback, for examples and real-client tests.

use std::net::SocketAddr;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::scenario::Scenario;
use crate::upstream::SimUpstream;

/// Serves `scenario`'s simulated API on `addr` until the returned task is aborted or dropped
/// with its runtime. Only loopback addresses are accepted (port 0 picks a free port). Returns
/// the bound address and the server task.
///
/// Time runs at wall-clock speed here (unless the runtime's clock is paused); a dropped
/// connection fault closes the connection.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let scenario = gentlify_sim::Scenario::builtin().remove(0);
/// let (addr, _server) = gentlify_sim::serve("127.0.0.1:0".parse().unwrap(), scenario).await?;
/// println!("POST http://{addr}/v1/chat/completions");
/// # Ok(()) }
/// ```
pub async fn serve(
    addr: SocketAddr,
    scenario: Scenario,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "gentlify-sim serves on loopback addresses only",
        ));
    }
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let api = SimUpstream::new(&scenario);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = TowerToHyperService::new(api.clone());
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((bound, task))
}
