// The compose stack's init step (service `mongodb-init`): make the single mongod the one
// member of replica set rs0, once, then wait until it is primary. Running it again changes
// nothing. The services connect with ?replicaSet=rs0 (deploy/compose/env/app.env).
try {
  rs.status();
} catch (e) {
  if (e.codeName !== "NotYetInitialized") throw e;
  rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongodb:27017" }] });
  print("replica set rs0 initiated");
}
for (let i = 0; i < 60; i++) {
  if (db.hello().isWritablePrimary) {
    print("replica set rs0: primary is mongodb:27017");
    quit(0);
  }
  sleep(1000);
}
print("replica set rs0 has no primary after 60 s");
quit(1);
