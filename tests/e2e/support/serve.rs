//! A loopback TCP server for the test-support proxies, shared with the examples.

/// Serve loopback TCP connections on a free port, on a thread and runtime of its own (so
/// blocking test code can drive it); `handle` runs for each connection. Returns the port.
pub fn serve_tcp<F, Fut>(handle: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    on_own_thread(|listener| async move {
        loop {
            if let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(handle(sock));
            }
        }
    })
}

/// Bind a free loopback port and run `serve` on it, on a thread and runtime of its own.
pub fn on_own_thread<S, Fut>(serve: S) -> u16
where
    S: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            serve(listener).await;
        });
    });
    rx.recv().unwrap()
}
