"""Audio decoding, the log-mel frontend and audio-to-video-frame alignment."""
