fn main() -> std::io::Result<()> {
    let proto = "../proto/stator/v1/state.proto";
    println!("cargo:rerun-if-changed={proto}");
    prost_build::Config::new()
        .bytes(["."])
        .compile_protos(&[proto], &["../proto"])
}
