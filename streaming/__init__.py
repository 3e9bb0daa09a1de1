"""The streaming server: the WebSDK client protocol, REST hooks, applications, and the listeners."""
