<#
.SYNOPSIS
  Install batchfleet worker services on this machine (run as Administrator).

.EXAMPLE
  .\install.ps1 -Venv C:\batchfleet\venv -Instances 2
#>
[CmdletBinding()]
param(
    # The virtualenv holding batchfleet and pywin32.
    [string] $Venv = "C:\batchfleet\venv",
    # Worker services to install: batchfleet-worker-1 .. batchfleet-worker-N.
    [ValidateRange(1, 64)] [int] $Instances = 1,
    # Settings: the same batchfleet.toml as on Linux (/etc/batchfleet/batchfleet.toml).
    [string] $ConfigFile = (Join-Path $env:ProgramData "batchfleet\batchfleet.toml"),
    # Credentials for the worker's environment (same format as the Linux /etc/batchfleet/batchfleet.env).
    [string] $EnvFile = (Join-Path $env:ProgramData "batchfleet\batchfleet.env"),
    # Run as LocalSystem instead of a per-service virtual account (not recommended).
    [switch] $LocalSystem,
    # Install but do not start.
    [switch] $NoStart
)
$ErrorActionPreference = "Stop"

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    throw "install.ps1 must run as Administrator"
}

$python = Join-Path $Venv "Scripts\python.exe"
$exe = Join-Path $Venv "Scripts\batchfleet.exe"
foreach ($path in @($python, $exe)) {
    if (-not (Test-Path $path)) { throw "$path not found; install batchfleet[windows] into $Venv first" }
}
& $python -c "import win32serviceutil" 2>$null
if ($LASTEXITCODE -ne 0) { throw "pywin32 is missing in $Venv; run: $python -m pip install 'batchfleet[windows]'" }

# Data folder: settings, logs, temp space for downloads.
$data = Join-Path $env:ProgramData "batchfleet"
$logs = Join-Path $data "logs"
$tmp = Join-Path $data "tmp"
New-Item -ItemType Directory -Force -Path $data, $logs, $tmp | Out-Null
if (-not (Test-Path $ConfigFile)) {
    Copy-Item (Join-Path $PSScriptRoot "..\batchfleet.toml.example") $ConfigFile
    Write-Warning "created $ConfigFile from the example: edit it before starting the workers"
    $NoStart = $true
}
if (-not (Test-Path $EnvFile)) {
    Copy-Item (Join-Path $PSScriptRoot "..\systemd\batchfleet.env.example") $EnvFile
    Add-Content $EnvFile "`r`n# Windows: temp space for downloads (writable by the service accounts).`r`nTEMP=$tmp`r`nTMP=$tmp"
    Write-Warning "created $EnvFile from the example: edit it before starting the workers"
    $NoStart = $true
}

& $python (Join-Path $PSScriptRoot "batchfleet_service.py") install --instances $Instances --env-file $EnvFile `
    --config-file $ConfigFile --exe $exe
if ($LASTEXITCODE -ne 0) { throw "service installation failed" }

# The settings files and the signing key hold credentials: only SYSTEM, Administrators and
# the worker services may read them.
$keyFile = Join-Path $data "signing.key"
$secretFiles = @($EnvFile, $ConfigFile) + @($keyFile | Where-Object { Test-Path $_ })
foreach ($file in $secretFiles) {
    & icacls $file /inheritance:r /grant:r "SYSTEM:(F)" "Administrators:(F)" | Out-Null
}

for ($n = 1; $n -le $Instances; $n++) {
    $name = "batchfleet-worker-$n"
    # Restart after a failure (5 s, 30 s, then 60 s), also when the service stops with an error code.
    & sc.exe failure $name reset= 86400 actions= restart/5000/restart/30000/restart/60000 | Out-Null
    & sc.exe failureflag $name 1 | Out-Null
    if (-not $LocalSystem) {
        # A virtual account per service: no password, no rights beyond what is granted here.
        $account = "NT SERVICE\$name"
        & sc.exe config $name obj= $account | Out-Null
        foreach ($file in $secretFiles) { & icacls $file /grant "${account}:(R)" | Out-Null }
        & icacls $logs /grant "${account}:(OI)(CI)(M)" | Out-Null
        & icacls $tmp /grant "${account}:(OI)(CI)(M)" | Out-Null
    }
    if (-not $NoStart) {
        Start-Service $name
        Write-Host "started $name"
    }
}
Write-Host "worker output: $logs; service messages: Event Viewer > Windows Logs > Application"
