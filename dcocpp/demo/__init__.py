"""`dcocpp demo`: the charger and a central system in one process, nothing else needed.

The demo's script and the charger on simulated hardware (`run`), its embedded central system
(`central_system`) and its live view (`view`); the command that starts it is
`dcocpp.cli.demo`.
"""

# The slowest pace the script works at: slower, the simulated EV's battery (75 kWh from 20 %,
# charged in real time at 75 kW) is full before the script pauses it (at 0.004, after 12 / 0.004
# s), and a full EV does not resume. Any faster pace works: every step waits for the charger.
MIN_SPEED = 0.01
