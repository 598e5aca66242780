//! Launcher for the eci-emulator binary (to come).
