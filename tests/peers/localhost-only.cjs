// Preload (`node --require ./localhost-only.cjs ...`) that pins every net.Server.listen() to 127.0.0.1.
// server-everything has no host option and would otherwise bind all interfaces; test traffic stays on loopback.
'use strict';
const net = require('node:net');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (first !== null && typeof first === 'object' && !Array.isArray(first)) {
    // listen(options[, cb]): keep a Unix socket path, force the host otherwise.
    if (first.path === undefined) args[0] = { ...first, host: '127.0.0.1' };
  } else if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, cb]): replace or insert the host.
    if (typeof args[1] === 'string') args[1] = '127.0.0.1';
    else args.splice(1, 0, '127.0.0.1');
  } else if (first === undefined || typeof first === 'function') {
    // listen([cb]): a random port on all interfaces otherwise.
    args.splice(0, 0, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
