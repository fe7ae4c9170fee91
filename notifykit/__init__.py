"""notifykit: real-time notifications to authenticated users over websockets, scaled by Redis."""
