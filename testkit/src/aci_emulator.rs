//! Launcher for the aci-emulator binary (to come).
