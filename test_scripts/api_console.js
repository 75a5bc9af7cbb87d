// console.* at every level, with values of every kind; listLogs() reads them back.
register("/console", function () {
  console.log("log", 1, true, null, undefined, { a: [1, 2] });
  console.info("info line");
  console.debug("debug line");
  console.warn("warn line");
  console.error("error line", new TypeError("bad type"));
  const cyclic = {}; cyclic.self = cyclic;
  console.log("cyclic", cyclic);
  writeLog("x".repeat(20000));
  return { body: listLogs() };
});
