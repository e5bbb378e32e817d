"""Classical-channel messages between ground station and satellite."""
