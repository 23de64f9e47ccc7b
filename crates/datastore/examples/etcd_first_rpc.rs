use std::time::Instant;
fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let ep = std::env::args().nth(2).unwrap_or("http://127.0.0.1:23791".into());
    let rt = if mode.starts_with("ct") {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    };
    rt.block_on(async {
        let t = Instant::now();
        let mut c = etcd_client::Client::connect([ep.as_str()], None).await.unwrap();
        let t1 = t.elapsed();
        let t = Instant::now();
        if mode.ends_with("p") { c.put("/x", "y", None).await.unwrap(); } else { c.get("/x", None).await.unwrap(); }
        let t2 = t.elapsed();
        let t = Instant::now();
        if mode.ends_with("p") { c.put("/x", "y", None).await.unwrap(); } else { c.get("/x", None).await.unwrap(); }
        let t3 = t.elapsed();
        println!("connect {t1:?} first {t2:?} second {t3:?}");
    });
}
