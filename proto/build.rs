use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of system packages.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded, so setting the environment is sound; prost reads PROTOC.
    unsafe { env::set_var("PROTOC", protoc) };
    let include = protoc_bin_vendored::include_path()?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("podprovider_descriptor.bin"))
        // Providers implement only what their cloud offers; the rest answers UNIMPLEMENTED.
        .generate_default_stubs(true)
        // Messages that can hold secrets get a hand-written, redacting Debug (src/redact.rs).
        .skip_debug([
            ".podprovider.v1.EnvVar",
            ".podprovider.v1.FileEntry",
            ".podprovider.v1.RegistryCredential",
            ".podprovider.v1.AzureFileVolume",
            ".podprovider.v1.Container",
        ])
        .compile_protos(
            &[PathBuf::from("proto/podprovider/v1/podprovider.proto")],
            &[PathBuf::from("proto"), include],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
