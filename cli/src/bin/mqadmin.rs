//! `mqadmin`, RocketMQ's admin CLI, against our name servers and store nodes.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(rmq_cli::mqadmin::main(args).await);
}
