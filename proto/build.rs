//! Compiles the .proto files with `protox` (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "apache/rocketmq/v2/definition.proto",
        "apache/rocketmq/v2/service.proto",
        "apache/rocketmq/v2/admin.proto",
        "rmq/internal/store.proto",
        "rmq/internal/namesrv.proto",
        "rmq/internal/replication.proto",
        "rmq/internal/state.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .bytes(".apache.rocketmq.v2.Message.body")
        .bytes(".rmq.store.v1.StoreMessage.body")
        .bytes(".rmq.store.v1.PoppedMessage.record")
        .bytes(".rmq.replication.v1.Data.bytes")
        .compile_fds(fds)?;
    Ok(())
}
