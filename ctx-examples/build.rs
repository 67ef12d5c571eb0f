//! Generates the `Relay` service (tonic) and its messages (prost) from `proto/relay.proto`,
//! the project's copy of the wire contract. protoc comes from the `protoc-bin-vendored`
//! crate, so a fresh machine needs nothing installed; `PROTOC` overrides it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: a build script is single-threaded; nothing else reads the environment yet.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    tonic_prost_build::configure().compile_protos(&["proto/relay.proto"], &["proto"])?;
    Ok(())
}
