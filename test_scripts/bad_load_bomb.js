// Allocates without bound at top level: the load fails on the memory limit.
const hoard = [];
while (true) hoard.push(new Array(10000).fill(hoard.length));
