//! aci-emulator: skeleton, filled in by issue work.

fn main() {}
