// Send everything through the local onionmesh SOCKS5 proxy; names are resolved by the exit.
function FindProxyForURL(url, host) {
  return "SOCKS5 127.0.0.1:9050";
}
