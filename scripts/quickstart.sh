#!/usr/bin/env bash
# Builds Chorus, starts a local cluster (one controller, three node agents on loopback, each
# under an operator of its own, state in ./.chorus), runs an example job with sbatch --wait,
# then the same job as two replicas whose results are compared, shows squeue/sacct, and leaves
# the cluster running. Stop it with: kill "$(cat .chorus/up.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
BIN=$PWD/target/release
mkdir -p .chorus
if [ -f .chorus/up.pid ] && kill -0 "$(cat .chorus/up.pid)" 2>/dev/null; then
  echo "stopping the cluster started earlier (pid $(cat .chorus/up.pid))"
  kill "$(cat .chorus/up.pid)"; sleep 1
fi
setsid "$BIN/chorus" up --dir .chorus --nodes 3 > .chorus/up.out 2>&1 < /dev/null &
echo $! > .chorus/up.pid
for _ in $(seq 1 600); do
  grep -q '^export CHORUS_CONF=' .chorus/up.out 2>/dev/null && break
  kill -0 "$(cat .chorus/up.pid)" 2>/dev/null || { cat .chorus/up.out; exit 1; }
  sleep 0.1
done
line=$(grep '^export CHORUS_CONF=' .chorus/up.out) || { cat .chorus/up.out; exit 1; }
eval "$line"
export PATH=$BIN:$PATH
cat .chorus/up.out

cat > .chorus/hello.sh <<'JOB'
#!/bin/bash
#SBATCH --job-name=hello
#SBATCH --ntasks=1
#SBATCH --time=1
echo "Hello from job $SLURM_JOB_ID on $SLURMD_NODENAME (cluster $SLURM_CLUSTER_NAME)"
JOB
cd .chorus
echo "\$ sbatch --wait hello.sh"
sbatch --wait hello.sh
id=$(sacct -n -X -P --format=JobID | tail -1)
echo "\$ cat slurm-$id.out"; cat "slurm-$id.out"
cat > pi.sh <<'JOB'
#!/bin/sh
#SBATCH --job-name=pi
#SBATCH --replicas=2
#SBATCH --time=1
awk 'BEGIN { printf "pi is %.12f\n", atan2(0, -1) }'
JOB
echo "\$ sbatch --wait pi.sh    # #SBATCH --replicas=2: two nodes of two operators, compared"
sbatch --wait pi.sh
id=$(sacct -n -X -P --format=JobID | tail -1)
echo "\$ scontrol show job $id | grep -E 'Replicas|Paid'"
scontrol show job "$id" | grep -E 'Replicas|Paid'
echo "\$ cat slurm-$id.out"; cat "slurm-$id.out"
echo "\$ squeue"; squeue
echo "\$ sacct --format=JobID,JobName,State,ExitCode,Replicas,Verdict,AgreedNodes"
sacct --format=JobID,JobName,State,ExitCode,Replicas,Verdict,AgreedNodes
echo
echo "The cluster is still running. To use it from this shell:"
echo "  $line; export PATH=$BIN:\$PATH"
echo "Stop it with: kill \$(cat $PWD/up.pid)"
