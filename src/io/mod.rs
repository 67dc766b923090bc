//! The I/O transport below the devices and the media layer: aligned
//! buffers (allocated once, registered with rings).

pub mod buffers;
