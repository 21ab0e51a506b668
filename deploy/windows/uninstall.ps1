<#
.SYNOPSIS
  Stop and remove every batchfleet worker service on this machine (run as Administrator).
#>
[CmdletBinding()]
param(
    [string] $Venv = "C:\batchfleet\venv",
    # Also delete %ProgramData%\batchfleet (settings, logs, temp files).
    [switch] $RemoveData
)
$ErrorActionPreference = "Stop"

$python = Join-Path $Venv "Scripts\python.exe"
if (Test-Path $python) {
    # Stops each worker (CTRL_BREAK, grace period, then kill) and removes it.
    & $python (Join-Path $PSScriptRoot "batchfleet_service.py") remove --all
    if ($LASTEXITCODE -ne 0) { throw "removing the services failed" }
} else {
    # The venv is gone: fall back to the Service Control Manager.
    Get-Service -Name "batchfleet-worker-*" -ErrorAction SilentlyContinue | ForEach-Object {
        Stop-Service $_.Name -ErrorAction SilentlyContinue
        & sc.exe delete $_.Name | Out-Null
        Write-Host "removed $($_.Name)"
    }
}
if ($RemoveData) {
    Remove-Item -Recurse -Force (Join-Path $env:ProgramData "batchfleet") -ErrorAction SilentlyContinue
}
