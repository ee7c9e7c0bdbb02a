fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_build::configure().compile_protos(&["proto/synod.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/synod.proto");
    Ok(())
}
